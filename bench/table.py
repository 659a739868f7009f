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


def convert_table(result: dict) -> str:
    lines = [
        f"Converting {result['speed'][0]['images']:,} images ({_where(result)}):",
        "",
        "| workers | images/s (best) | seconds, each repeat |",
        "|---|---|---|",
    ]
    for workers, best in result["best_images_per_s"].items():
        runs = [r["seconds"] for r in result["speed"] if str(r["workers"]) == str(workers)]
        lines.append(f"| {workers} | {best:,} | {', '.join(map(str, runs))} |")
    lines += [
        "",
        f"Size on disk (source JPEGs: {result['source_bytes'] / 2**20:.1f} MiB):",
        "",
        "| encoding | MiB | bytes per image | images/s |",
        "|---|---|---|---|",
    ]
    for row in result["size"]:
        lines.append(
            f"| {row['encoding']} | {row['MiB']} | {row['bytes_per_image']:,} | {row['images_per_s']:,} |"
        )
    return "\n".join(lines)


def _count(value) -> str:
    return "-" if value is None else f"{value:,}"


def pipeline_table(result: dict) -> str:
    lines = [
        f"Two-view images per second, batch {result['batch_size']}, {result['dtype']} ({_where(result)}; "
        f"torch {result['torch']}, DALI {result['dali']}):",
        "",
        "| shards | side | DALI ops | DALI threads | prefetch | DALI | torchvision DataLoader | "
        "DALI / DataLoader | runs (DALI; DataLoader) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        runs = f"{row['runs'].get('dali', '-')}; {row['runs'].get('torchvision', '-')}"
        dali, torchvision = (_count(row.get(f"{k}_images_per_s")) for k in ("dali", "torchvision"))
        prefetch = row.get("prefetch", result.get("prefetch", "-"))  # older files: one for the run
        lines.append(
            f"| {row['dataset']} | {row['size']} | {row.get('augment_device', '-')} | "
            f"{row.get('dali_threads', '-')} | {prefetch} | {dali} | "
            f"{torchvision} | {row.get('dali_over_torchvision', '-')} | {runs} |"
        )
    return "\n".join(lines)


def _memory(mode: dict) -> str:
    return "-" if mode.get("peak_memory_gb") is None else f"{mode['peak_memory_gb']:.2f}"


def train_table(result: dict) -> str:
    lines = [
        f"Training images/s (two views each), {result['precision']}, channels_last "
        f"{result['channels_last']}; median of {result['repeats']} x {result['steps']} steps after "
        f"{result['warmup']} ({_where(result)}; torch {result['torch']}, DALI {result['dali']}):",
        "",
        "| shards | side | model | batch | compile | graphs | optimiser | DALI ops | prefetch | first step s "
        "| model alone | DALI | DataLoader | efficiency "
        "(DALI / model) | speedup (DALI / DataLoader) | data wait (DALI; DataLoader) | peak GiB "
        "(model; DALI; DataLoader) | epoch s (DALI; DataLoader) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        m = row["modes"]
        a, b, c = m.get("model", {}), m.get("dali", {}), m.get("torchvision", {})
        compiled = (row.get("compile_mode") or "on") if row["compile"] else "off"
        graphs = (
            "off" if not row.get("cuda_graphs") else "on" if row.get("graph_captured", True) else "no capture"
        )
        lines.append(
            f"| {row['dataset']} | {row['size']} | {row['model']} | {row['batch_size']} | {compiled} | "
            f"{graphs} | {row.get('optimizer', 'lars (timm)')} | "
            f"{row.get('augment_device', '-')} | {row.get('prefetch', '-')} | "
            f"{row.get('first_step_seconds', '-')} | "
            f"{a.get('images_per_s', '-')} | "
            f"{b.get('images_per_s', '-')} | {c.get('images_per_s', '-')} | "
            f"{row.get('efficiency', '-')} | {row.get('speedup', '-')} | "
            f"{b.get('data_wait', '-')}; {c.get('data_wait', '-')} | "
            f"{_memory(a)}; {_memory(b)}; {_memory(c)} | "
            f"{b.get('epoch_seconds', '-')}; {c.get('epoch_seconds', '-')} |"
        )
    return "\n".join(lines)


def time_to_accuracy_table(result: dict) -> str:
    def cell(value) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    lines = [
        f"Time to accuracy, config `{result['config']}` {' '.join(result['overrides'])} "
        f"({_where(result)}; torch {result['torch']}, DALI {result['dali']}):",
        "",
        "| step | epoch | training seconds | kNN k=200 weighted | kNN k=10 majority | linear top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for p in result["curve"]:
        lines.append(
            f"| {p['global_step']} | {p['epoch']} | {p['train_seconds']} | {cell(p['knn'])} | "
            f"{cell(p.get('knn_k10_majority'))} | {cell(p['linear'])} |"
        )
    projection = result.get("projection")
    if projection:
        lines.append(
            f"| projection (not measured) | {projection['epochs']:g} | {projection['train_seconds']} | "
            f"{cell(projection.get('knn'))} | {cell(projection.get('knn_k10_majority'))} | "
            f"{cell(projection.get('linear'))} |"
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
    lines = [
        f"NT-Xent forward + backward, projections {result['dim']} wide ({_where(result)}; "
        f"torch {result['torch']}):",
        "",
        "| batch | ms (median) | runs |",
        "|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['batch_size']} | {row['ms']} | {', '.join(map(str, row['runs']))} |")
    return "\n".join(lines)


def optim_table(result: dict) -> str:
    lines = [
        f"Optimiser step on {result['model']}'s {result['tensors']} tensors ({result['parameters']:,} "
        f"parameters; {_where(result)}; torch {result['torch']}, timm {result['timm']}):",
        "",
        "| optimiser | ms per step (median) | speedup | runs |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['optimizer']} | {row['ms']} | {row['speedup']} | {', '.join(map(str, row['runs']))} |"
        )
    return "\n".join(lines)


def views_table(result: dict) -> str:
    lines = [
        f"N views per decoded image against the two-view loader, {result['dtype']} ({_where(result)}; "
        f"torch {result['torch']}, DALI {result['dali']}, {result['threads']} threads):",
        "",
        "| shards | views | batch | images/s | views/s | speed (views/s ÷ two-view) | CPU ms per 1,000 views "
        "| CPU saving (two-view ÷ this) | runs, views/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        views = f"{row['views']} x {row['size']} px" + (
            f" + {row['small_views']} x {row['small_size']} px" if row["small_views"] else ""
        )
        lines.append(
            f"| {row['dataset']} | {views} | {row['batch_size']} | {row['images_per_s']:,} | "
            f"{row['views_per_s']:,} | {row['speed']} | {row['cpu_ms_per_1000_views']} | "
            f"{row['cpu_saving']} | "
            f"{', '.join(map(str, row['runs_views_per_s']))} |"
        )
    return "\n".join(lines)


def probe_table(result: dict) -> str:
    settings, off, on = result["settings"], result["probe_off"], result["probe_on"]
    return "\n".join(
        [
            f"Online probe cost: `fastclr pretrain`, {settings['encoder']} (CIFAR stem), "
            f"{settings['size']} px, batch {settings['batch_size']}, {settings['steps']} steps a run "
            f"({_where(result)}; torch {result['torch']}, DALI {result['dali']}):",
            "",
            "| probe | images/s (best run) | median | runs | ratio on/off |",
            "|---|---|---|---|---|",
            *(
                f"| {name} | {mode['images_per_s']} | {round(mode['median'], 1)} | "
                f"{', '.join(map(str, mode['runs']))} | {ratio} |"
                for name, mode, ratio in (("off", off, ""), ("on", on, result["ratio_on_off"]))
            ),
        ]
    )


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
