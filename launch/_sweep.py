"""`fastclr sweep`: an experiment at every point of a grid, one results table, comparison plots.

Each point is the experiment with the grid's values set, run in its own folder
`OUT/<key=value,...>/`; a point's experiment.json records its finished steps, so
a rerun (after a crash, or with more --eval steps) only runs what is missing.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fastclr.files import write_atomic
from fastclr.launch._config import ConfigError, split_override
from fastclr.launch._experiment import (
    build_steps,
    load_experiment,
    resolve,
    run_steps,
    set_values,
    step_command,
    target,
)


def parse_grid(config: DictConfig, grid_args: list[str]) -> dict[str, list]:
    """The config's `grid:` with each `--grid key=[a,b,c]` added or replacing it; key order kept."""
    grid = {key: list(values) for key, values in OmegaConf.to_container(config.grid).items()}
    for text in grid_args:
        key, values = split_override(text)
        grid[key] = list(values) if isinstance(values, list) else [values]
    if not grid:
        raise ConfigError("no grid: give --grid 'key=[a,b]' or put a grid: section in the config")
    for key, values in grid.items():
        target(config, key)  # a key that lands nowhere fails before the first point runs
        if not values:
            raise ConfigError(f"--grid {key}: no values")
    return grid


def point_label(values: dict) -> str:
    """`model.head=linear,temperature=0.2`: readable, and safe as a folder name."""
    text = ",".join(f"{key}={value}" for key, value in values.items())
    return re.sub(r"[^\w.=,+-]", "_", text)


def sweep(
    path: str,
    grid_args: list[str],
    evals: list[str],
    out: str | None,
    overrides: list[str],
    say=print,
    argv: list[str] | None = None,
) -> Path:
    base = load_experiment(path, overrides)
    grid = parse_grid(base, grid_args)
    out = Path(out or f"{resolve(base)['runs']}/sweep")
    pretrains = [n for n in base.steps if step_command(n, base.steps[n]) == "pretrain"]
    only = pretrains + list(evals) if pretrains or evals else None
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    # Every point is parsed and validated before the first one trains.
    prepared = []
    for values in points:
        config = copy.deepcopy(base)
        config.runs = str(out / point_label(values))
        set_values(config, values)
        prepared.append((values, config, build_steps(config, only)))
    say(f"sweep of {len(points)} points over {', '.join(grid)} into {out}")
    rows = []
    for number, (values, config, steps) in enumerate(prepared, 1):
        say(f"== point {number}/{len(points)}: {point_label(values)}")
        record = run_steps(config, steps, say, argv)
        if record is None:
            say("stopped; run the same sweep again to resume")
            raise SystemExit(130)
        rows.append((values, record, config))
    if os.environ.get("RANK", "0") == "0":
        write_results(out, path, grid, rows, [s.name for s in prepared[0][2]], say)
    return out / "results.md"


def write_results(out: Path, path: str, grid: dict, rows: list, step_names: list[str], say=print) -> None:
    """results.md (one row per point), sweep.json (the same as data), and plots comparing the points."""
    out.mkdir(parents=True, exist_ok=True)
    columns = []  # (header, step, key)
    for name in step_names:
        results = [record["steps"][name]["result"] for _, record, _ in rows]
        for key, header in (("loss", "loss"), ("knn", "kNN"), ("top1", "top-1")):
            if any(r.get(key) is not None for r in results):
                columns.append((f"{name} {header}", name, key))
        columns.append((f"{name} time", name, "seconds"))
    lines = [
        f"# Sweep of `{path}`",
        "",
        f"Grid: {', '.join(f'`{k}` in {v}' for k, v in grid.items())}. Each point's folder holds its runs; "
        "rerunning the sweep skips finished steps.",
        "",
        f"Measured on {_device()}, {time.strftime('%Y-%m-%d')}.",
        "",
        "| " + " | ".join([*grid, *(c[0] for c in columns)]) + " |",
        "|" + "---|" * (len(grid) + len(columns)),
    ]
    table = []
    for values, record, _ in rows:
        cells = [str(v) for v in values.values()]
        figures = {}
        for header, name, key in columns:
            value = record["steps"][name]["result"].get(key)
            figures[header] = value
            cells.append(_cell(key, value))
        lines.append("| " + " | ".join(cells) + " |")
        table.append({"point": values, "figures": figures, "folder": point_label(values)})
    figures = _plots(out, rows, columns, say)
    lines += ["", *(f"![{p.stem}]({p.name})" for p in figures), ""]
    write_atomic(out / "results.md", "\n".join(lines))
    write_atomic(out / "sweep.json", json.dumps({"config": path, "grid": grid, "points": table}, indent=1))


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}"
    return f"CPU ({os.cpu_count()} cores)"


def _cell(key: str, value) -> str:
    if value is None:
        return "n/a"
    if key in ("top1", "knn"):
        return f"{value:.2%}"
    if key == "seconds":
        return f"{value:.0f} s"
    return f"{value:.4f}"


def _plots(out: Path, rows: list, columns: list, say=print) -> list[Path]:
    """sweep.png: every accuracy column as bars per point; plus the curves of each point's runs."""
    from fastclr.launch._plots import bars_figure, save_png
    from fastclr.launch._report import curves

    made = []
    accuracy = [c for c in columns if c[2] in ("top1", "knn")]
    labels = [point_label(values) for values, _, _ in rows]
    if accuracy:
        figure = bars_figure(
            labels,
            {
                header: [record["steps"][name]["result"].get(key) for _, record, _ in rows]
                for header, name, key in accuracy
            },
        )
        made.append(save_png(figure, out / "sweep.png"))
    else:
        say("sweep.png skipped: no step of the sweep measured an accuracy (add --eval linear or knn)")
    metric_files = {}
    for label, (_, _, config) in zip(labels, rows, strict=True):
        for name, step in resolve(config)["steps"].items():
            folder = step.get("run_dir") or step.get("out")
            if folder and (Path(folder) / "metrics.jsonl").is_file():
                metric_files[Path(folder) / "metrics.jsonl"] = f"{label} {name}"
    made += curves(list(metric_files), out, labels=metric_files, say=say)
    return made
