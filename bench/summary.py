"""The key figures of a bench/gpu.sh stage, a line each: what its call's short summary prints first.

    python -m fastclr.bench.summary STAGE_FOLDER...

Reads the JSON every benchmark of the stage wrote (the kind told apart as bench.table does) and the
last line of a pytest log (pytest*.log), and prints the figures the issue's targets are stated in:
accuracy against training seconds, two-view images per second end to end and alone, efficiency,
epoch seconds.
A file it cannot read is a line saying so, never a traceback: the summary must reach the reader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastclr.bench.table import kind


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _rate(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def train_lines(result: dict) -> list[str]:
    lines = []
    for row in result["rows"]:
        modes = row["modes"]
        graphs = "off" if not row.get("cuda_graphs") else "on" if row.get("graph_captured") else "no capture"
        compiled = (row.get("compile_mode") or "on") if row["compile"] else "off"
        model, dali = modes.get("model", {}), modes.get("dali", {})
        lines.append(
            f"{row['model']} {row['size']} px b{row['batch_size']} {row.get('optimizer', 'lars_timm')} "
            f"ops {row.get('augment_device', 'gpu')} graphs {graphs} compile {compiled} "
            f"prefetch {row.get('prefetch', 2)}: "
            f"model {_rate(model.get('images_per_s'))}, DALI {_rate(dali.get('images_per_s'))} img/s, "
            f"efficiency {row.get('efficiency', '-')}, epoch {dali.get('epoch_seconds', '-')} s, "
            f"first step {row.get('first_step_seconds', '-')} s"
        )
    return lines


def pipeline_lines(result: dict) -> list[str]:
    return [
        f"{row['dataset']} ops {row.get('augment_device', 'gpu')} threads {row.get('dali_threads')} prefetch "
        f"{row.get('prefetch', result.get('prefetch'))}: DALI {_rate(row.get('dali_images_per_s'))} img/s"
        for row in result["rows"]
    ]


def accuracy_lines(result: dict) -> list[str]:
    if not result["curve"]:
        return ["no point measured"]
    last = result["curve"][-1]
    reached = "; ".join(
        f"{target} " + ("not yet" if hit is None else f"at {hit['train_seconds']} s")
        for target, hit in result.get("reached", {}).items()
    )
    return [
        f"epoch {last['epoch']} after "
        f"{last['train_seconds']} s of training: linear {_pct(last['linear'])}, kNN "
        f"{_pct(last.get('knn_k10_majority'))} (k=10 majority), {_pct(last['knn'])} (k=200 weighted)",
        f"{len(result['curve'])} points, {'finished' if result.get('finished') else 'not finished'}"
        + (f"; {reached}" if reached else ""),
    ]


def speed_lines(result: dict) -> list[str]:
    run, bench = result["pretrain"], result["bench"]
    return [
        f"pretrain {_rate(run['images_per_s'])} img/s = {result['pretrain_over_bench']} x the bench's "
        f"{_rate(bench['dali_images_per_s'])} (ops {bench['row']['augment_device']}, graphs "
        f"{'on' if bench['row']['cuda_graphs'] else 'off'}); data wait {run['data_wait']}; epochs "
        f"{run['epoch_seconds']} s"
    ]


def profile_lines(result: dict) -> list[str]:
    top = result["top"][0]["name"] if result["top"] else "-"
    return [
        f"ops {result['augment_device']}: {_rate(result['images_per_s'])} img/s, device busy "
        f"{result['device_busy']}, most time in {top}"
    ]


def probe_lines(result: dict) -> list[str]:
    off, on = result["probe_off"]["images_per_s"], result["probe_on"]["images_per_s"]
    return [f"probe off {_rate(off)}, on {_rate(on)} img/s: on/off {result['ratio_on_off']}"]


def shard_sets_lines(result: dict) -> list[str]:
    made = ", ".join(f"{name} {s['images']:,} in {s['seconds']} s" for name, s in result["made"].items())
    return [f"{made or 'every set there already'}; {result['seconds']} s on {result['cores']} cores"]


LINES = {
    "shard_sets": shard_sets_lines,
    "train": train_lines,
    "pipeline": pipeline_lines,
    "time_to_accuracy": accuracy_lines,
    "pretrain_speed": speed_lines,
    "profile": profile_lines,
    "probe": probe_lines,
}


def file_lines(path: Path) -> list[str]:
    """The key figures of one file a stage wrote ([] for one that holds none)."""
    try:
        if path.suffix == ".log" and path.name.startswith("pytest"):
            text = [line for line in path.read_text().splitlines() if line.strip()]
            return [f"pytest: {text[-1].strip('= ')}" if text else "pytest: no output"]
        if path.suffix != ".json":
            return []
        result = json.loads(path.read_text())
        name = kind(result)
        return [f"{path.stem}: {line}" for line in LINES[name](result)] if name in LINES else []
    except (OSError, ValueError, KeyError, TypeError, IndexError, ZeroDivisionError) as err:
        return [f"{path.name}: unreadable ({type(err).__name__}: {err})"]


def main() -> None:
    for folder in map(Path, sys.argv[1:]):
        paths = sorted(folder.iterdir()) if folder.is_dir() else []
        for path in paths:
            if path.stem.endswith("-curve") and path.with_name(path.name.replace("-curve", "")) in paths:
                continue  # a finished run's results hold its curve: the curve file is for one cut short
            for line in file_lines(path):
                print(line)


if __name__ == "__main__":
    main()
