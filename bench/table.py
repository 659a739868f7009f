"""Markdown tables from the benchmarks' JSON, for BENCHMARKS.md.

python -m fastclr.bench.table bench/results/convert.json bench/results/pipeline-cpu.json \
    bench/results/train-cpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _where(result: dict) -> str:
    device = result.get("device", "cpu")
    machine = f"{result['cpu']}, {result['cores']} cores" if device == "cpu" else device
    return f"{machine}; commit `{result['commit']}`; `{result['command']}`"


def _row(cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _table(title: str, header: list[str], rows) -> list[str]:
    """A markdown table under its title: a line of header cells, its rule, then a line a row of cells."""
    return [title, "", _row(header), "|" + "---|" * len(header), *map(_row, rows)]


def _runs(values) -> str:
    return ", ".join(map(str, values))


def convert_table(result: dict) -> str:
    speed = [
        (
            workers,
            f"{best:,}",
            _runs(r["seconds"] for r in result["speed"] if str(r["workers"]) == str(workers)),
        )
        for workers, best in result["best_images_per_s"].items()
    ]
    size = [
        (r["encoding"], r["MiB"], f"{r['bytes_per_image']:,}", f"{r['images_per_s']:,}")
        for r in result["size"]
    ]
    return "\n".join(
        [
            *_table(
                f"Converting {result['speed'][0]['images']:,} images ({_where(result)}):",
                ["workers", "images/s (best)", "seconds, each repeat"],
                speed,
            ),
            "",
            *_table(
                f"Size on disk (source JPEGs: {result['source_bytes'] / 2**20:.1f} MiB):",
                ["encoding", "MiB", "bytes per image", "images/s"],
                size,
            ),
        ]
    )


def _count(value) -> str:
    return "-" if value is None else f"{value:,}"


def pipeline_table(result: dict) -> str:
    def cells(row: dict) -> list:
        return [
            row["dataset"],
            row["size"],
            row.get("augment_device", "-"),
            row.get("dali_threads", "-"),
            row.get("prefetch", result.get("prefetch", "-")),  # older files: one for the run
            _count(row.get("dali_images_per_s")),
            _count(row.get("torchvision_images_per_s")),
            row.get("dali_over_torchvision", "-"),
            f"{row['runs'].get('dali', '-')}; {row['runs'].get('torchvision', '-')}",
        ]

    header = ["shards", "side", "DALI ops", "DALI threads", "prefetch", "DALI", "torchvision DataLoader"]
    header += ["DALI / DataLoader", "runs (DALI; DataLoader)"]
    title = (
        f"Two-view images per second, batch {result['batch_size']}, {result['dtype']} ({_where(result)}; "
        f"torch {result['torch']}, DALI {result['dali']}):"
    )
    return "\n".join(_table(title, header, map(cells, result["rows"])))


def _memory(mode: dict) -> str:
    return "-" if mode.get("peak_memory_gb") is None else f"{mode['peak_memory_gb']:.2f}"


def train_table(result: dict) -> str:
    def cells(row: dict) -> list:
        m = row["modes"]
        a, b, c = m.get("model", {}), m.get("dali", {}), m.get("torchvision", {})
        graphs = (
            "off" if not row.get("cuda_graphs") else "on" if row.get("graph_captured", True) else "no capture"
        )
        return [
            row["dataset"],
            row["size"],
            row["model"],
            row["batch_size"],
            (row.get("compile_mode") or "on") if row["compile"] else "off",
            graphs,
            row.get("optimizer", "lars (timm)"),
            row.get("augment_device", "-"),
            row.get("prefetch", "-"),
            row.get("first_step_seconds", "-"),
            *(mode.get("images_per_s", "-") for mode in (a, b, c)),
            row.get("efficiency", "-"),
            row.get("speedup", "-"),
            f"{b.get('data_wait', '-')}; {c.get('data_wait', '-')}",
            f"{_memory(a)}; {_memory(b)}; {_memory(c)}",
            f"{b.get('epoch_seconds', '-')}; {c.get('epoch_seconds', '-')}",
        ]

    header = ["shards", "side", "model", "batch", "compile", "graphs", "optimiser", "DALI ops", "prefetch"]
    header += ["first step s", "model alone", "DALI", "DataLoader", "efficiency (DALI / model)"]
    header += [
        "speedup (DALI / DataLoader)",
        "data wait (DALI; DataLoader)",
        "peak GiB (model; DALI; DataLoader)",
    ]
    header += ["epoch s (DALI; DataLoader)"]
    title = (
        f"Training images/s (two views each), {result['precision']}, channels_last "
        f"{result['channels_last']}; median of {result['repeats']} x {result['steps']} steps after "
        f"{result['warmup']} ({_where(result)}; torch {result['torch']}, DALI {result['dali']}):"
    )
    return "\n".join(_table(title, header, map(cells, result["rows"])))


def time_to_accuracy_table(result: dict) -> str:
    def cell(value) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    def accuracies(point: dict) -> list[str]:
        return [cell(point.get("knn")), cell(point.get("knn_k10_majority")), cell(point.get("linear"))]

    rows = [[p["global_step"], p["epoch"], p["train_seconds"], *accuracies(p)] for p in result["curve"]]
    projection = result.get("projection")
    if projection:
        when = [f"{projection['epochs']:g}", projection["train_seconds"]]
        rows.append(["projection (not measured)", *when, *accuracies(projection)])
    lines = _table(
        f"Time to accuracy, config `{result['config']}` {' '.join(result['overrides'])} "
        f"({_where(result)}; torch {result['torch']}, DALI {result['dali']}):",
        ["step", "epoch", "training seconds", "kNN k=200 weighted", "kNN k=10 majority", "linear top-1"],
        rows,
    )
    if result.get("reached"):
        reached = [
            f"{target}: "
            + ("not reached" if hit is None else f"{hit['train_seconds']} s (epoch {hit['epoch']})")
            for target, hit in result["reached"].items()
        ]
        lines += ["", f"Reached (measured): {'; '.join(reached)}."]
    if projection:
        lines += ["", f"Projection: {projection['method']}; {projection['caveat']}."]
    return "\n".join(lines)


def loss_table(result: dict) -> str:
    title = (
        f"NT-Xent forward + backward, projections {result['dim']} wide ({_where(result)}; "
        f"torch {result['torch']}):"
    )
    rows = [(r["batch_size"], r["ms"], _runs(r["runs"])) for r in result["rows"]]
    return "\n".join(_table(title, ["batch", "ms (median)", "runs"], rows))


def optim_table(result: dict) -> str:
    title = (
        f"Optimiser step on {result['model']}'s {result['tensors']} tensors ({result['parameters']:,} "
        f"parameters; {_where(result)}; torch {result['torch']}, timm {result['timm']}):"
    )
    rows = [(r["optimizer"], r["ms"], r["speedup"], _runs(r["runs"])) for r in result["rows"]]
    return "\n".join(_table(title, ["optimiser", "ms per step (median)", "speedup", "runs"], rows))


def views_table(result: dict) -> str:
    def cells(row: dict) -> list:
        views = f"{row['views']} x {row['size']} px" + (
            f" + {row['small_views']} x {row['small_size']} px" if row["small_views"] else ""
        )
        return [
            row["dataset"],
            views,
            row["batch_size"],
            f"{row['images_per_s']:,}",
            f"{row['views_per_s']:,}",
            row["speed"],
            row["cpu_ms_per_1000_views"],
            row["cpu_saving"],
            _runs(row["runs_views_per_s"]),
        ]

    title = (
        f"N views per decoded image against the two-view loader, {result['dtype']} ({_where(result)}; "
        f"torch {result['torch']}, DALI {result['dali']}, {result['threads']} threads):"
    )
    header = ["shards", "views", "batch", "images/s", "views/s", "speed (views/s ÷ two-view)"]
    header += ["CPU ms per 1,000 views", "CPU saving (two-view ÷ this)", "runs, views/s"]
    return "\n".join(_table(title, header, map(cells, result["rows"])))


def probe_table(result: dict) -> str:
    settings = result["settings"]
    title = (
        f"Online probe cost: `fastclr pretrain`, {settings['encoder']} (CIFAR stem), "
        f"{settings['size']} px, batch {settings['batch_size']}, {settings['steps']} steps a run "
        f"({_where(result)}; torch {result['torch']}, DALI {result['dali']}):"
    )
    rows = [
        (name, mode["images_per_s"], round(mode["median"], 1), _runs(mode["runs"]), ratio)
        for name, mode, ratio in (
            ("off", result["probe_off"], ""),
            ("on", result["probe_on"], result["ratio_on_off"]),
        )
    ]
    return "\n".join(_table(title, ["probe", "images/s (best run)", "median", "runs", "ratio on/off"], rows))


def kind(result: dict) -> str | None:
    """Which benchmark wrote `result` (None: one without a table)."""
    rows = result.get("rows") or [{}]
    for name, found in [
        ("probe", "probe_on" in result),
        ("convert", "speed" in result),
        ("shard_sets", "made" in result),
        ("time_to_accuracy", "curve" in result),
        ("pretrain_speed", "pretrain_over_bench" in result),
        ("profile", "top" in result),
        ("train", "modes" in rows[0]),
        ("optim", "optimizer" in rows[0]),
        ("loss", "ms" in rows[0]),
        ("views", "cpu_saving" in rows[0]),
        ("pipeline", "dali_images_per_s" in rows[0] or "torchvision_images_per_s" in rows[0]),
    ]:
        if found:
            return name
    return None


TABLES = {
    "probe": probe_table,
    "convert": convert_table,
    "time_to_accuracy": time_to_accuracy_table,
    "train": train_table,
    "optim": optim_table,
    "loss": loss_table,
    "views": views_table,
    "pipeline": pipeline_table,
}


def render(result: dict) -> str:
    """The table for whichever benchmark wrote `result`."""
    name = kind(result)
    if name not in TABLES:
        raise SystemExit(f"no table for a {name or 'unknown'} result; tables: {', '.join(TABLES)}")
    return TABLES[name](result)


def main() -> None:
    for path in sys.argv[1:]:
        print(render(json.loads(Path(path).read_text())))
        print()


if __name__ == "__main__":
    main()
