"""The pictures of `fastclr report` and `fastclr sweep`, drawn from records they have read.

Curves (loss.png, lr.png, accuracy.png) put each run's figures against epochs, which is what a person
thinks in ("after 3 epochs"); a run with no finished epoch falls back to steps. Pretraining and the
evaluations get a panel each: their epochs, losses and rates are not of one kind. Accuracies are in
percent on an axis at least `MIN_SPAN` points tall, so a 1-point gain looks like one. A run too short
for a log line is drawn from its epoch lines. Each builder returns a matplotlib `Figure` (no pyplot:
no global state, nothing to close), which `save_png` writes through `write_atomic`.
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patheffects import withStroke
from matplotlib.ticker import MaxNLocator, PercentFormatter

from fastclr.files import write_atomic

MIN_SPAN = 10.0  # percentage points: the least an accuracy axis spans
MARKERS_UP_TO = 40  # points in a line: fewer get a marker each, so a 3-epoch run shows its 3 figures
STYLES = ("-", "--", ":", "-.")
PANELS = ("pretraining", "evaluation")
TITLES = {"pretraining": "pretraining", "evaluation": "evaluations (each over its own epochs)"}
YLABELS = {"loss": "loss", "lr": "learning rate", "accuracy": "accuracy"}
# pretrain epoch-line keys: what each monitor is, as the legend says it
MONITORS = (
    ("knn_accuracy", "kNN, weighted vote"),
    ("knn_k10_majority_accuracy", "kNN, k=10 majority vote"),
    ("epoch_online_train_top1", "online probe, train"),
    ("online_val_top1", "online probe, val"),
)
# pretrain quantities drawn from its log lines or, when those are fewer, its epoch lines
FROM_LINES = {
    "loss": (("loss, per log line", "loss"), ("loss, epoch mean", "epoch_loss")),
    "lr": (("lr, per log line", "lr"), ("lr at epoch end", "epoch_end_lr")),
}
SKIPPED = {
    "loss": "no run logged a loss",
    "lr": "no run logged a learning rate",
    "accuracy": "no run measured an accuracy while training (the kNN monitor: data.knn_bank and "
    "data.knn_val; the online probe; or a linear / finetune evaluation)",
}


@dataclasses.dataclass
class Series:
    """One line of a curve figure."""

    figure: str  # "loss", "lr" or "accuracy"
    panel: str  # "pretraining" or "evaluation"
    run: str  # the run's label: its folder name, or a sweep point's
    quantity: str  # what the line is, as the legend says it
    steps: list[float]
    epochs: list[float] | None  # epochs done at each point; None when the run finished none
    values: list[float]  # accuracies as fractions


def run_series(records: list[dict], run: str) -> list[Series]:
    """Every line the records of one metrics.jsonl give.

    Pretrain runs log a line every `log_every` steps (`loss`, `lr`) and one per epoch (`epoch_loss`,
    `epoch_end_lr`, the monitors); loss and rate are drawn from whichever has more points. An
    evaluation logs one line per epoch (`train_loss`, `lr`, `val_top1`), its step the epoch's number."""
    logged = [r for r in records if "loss" in r]
    ends = [r for r in records if "epoch_loss" in r]
    evaluation = [r for r in records if "train_loss" in r or "val_top1" in r]
    # optimiser steps per epoch, from the last epoch line (its step ends epoch number `epoch`)
    # (a hand-written line without its epoch is drawn against steps)
    last = ends[-1] if ends else {}
    per_epoch = last["step"] / (last["epoch"] + 1) if isinstance(last.get("epoch"), (int, float)) else None
    dense = len(logged) > len(ends)
    lines = logged if dense else ends
    wanted = [  # figure, panel, quantity, key, records, steps per epoch
        *((f, "pretraining", *pair[0 if dense else 1], lines, per_epoch) for f, pair in FROM_LINES.items()),
        *(("accuracy", "pretraining", quantity, key, ends, per_epoch) for key, quantity in MONITORS),
        ("loss", "evaluation", "train loss", "train_loss", evaluation, 1),
        ("lr", "evaluation", "lr", "lr", evaluation, 1),
        ("accuracy", "evaluation", "val top-1", "val_top1", evaluation, 1),
    ]
    series = []
    for figure, panel, quantity, key, chosen, steps_per_epoch in wanted:
        points = [r for r in chosen if all(isinstance(r.get(k), (int, float)) for k in (key, "step"))]
        if points:
            steps = [r["step"] for r in points]
            epochs = None if steps_per_epoch is None else [s / steps_per_epoch for s in steps]
            series.append(Series(figure, panel, run, quantity, steps, epochs, [r[key] for r in points]))
    return series


def curve_figure(name: str, series: list[Series]) -> Figure:
    """`name` ("loss", "lr", "accuracy") over `series`: a panel per kind of run, a colour per run and
    a line style per quantity (a colour per quantity when there is one run), the legend beside."""
    panels = [p for p in PANELS if any(s.panel == p for s in series)]
    figure = Figure(figsize=(9, 3.2 * len(panels)), layout="constrained")
    for axes, panel in zip(figure.subplots(len(panels), squeeze=False)[:, 0], panels, strict=True):
        lines = [s for s in series if s.panel == panel]
        by_epoch = all(s.epochs is not None for s in lines)
        runs = list(dict.fromkeys(s.run for s in lines))
        quantities = list(dict.fromkeys(s.quantity for s in lines))
        for line in lines:
            which = runs.index(line.run) if len(runs) > 1 else quantities.index(line.quantity)
            x = line.epochs if by_epoch else line.steps
            y = [100 * v for v in line.values] if name == "accuracy" else line.values
            axes.plot(
                x,
                y,
                color=f"C{which % 10}",
                linestyle=STYLES[quantities.index(line.quantity) % len(STYLES)] if len(runs) > 1 else "-",
                marker="o" if len(x) <= MARKERS_UP_TO else None,
                markersize=3,
                label=_label(line, runs, quantities),
            )
        axes.set_title(TITLES[panel], fontsize=10)
        axes.set_xlabel("epoch" if by_epoch else "step")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 2.5" ticks
        axes.set_xlim(left=0)
        axes.set_ylabel(YLABELS[name])
        axes.grid(alpha=0.3)
        if name == "accuracy":
            axes.set_ylim(*percent_limits([100 * v for s in lines for v in s.values]))
            axes.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
        if name == "lr" and wants_log_axis(lines):
            # rates an order of magnitude apart: both readable; a rate of 0 (a schedule's end) is left out
            axes.set_yscale("log", nonpositive="mask")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return figure


def _label(line: Series, runs: list[str], quantities: list[str]) -> str:
    if len(runs) == 1:
        return line.quantity if len(quantities) > 1 else line.run
    return f"{line.run}: {line.quantity}" if len(quantities) > 1 else line.run


def percent_limits(values: list[float], min_span: float = MIN_SPAN) -> tuple[float, float]:
    """Axis limits (percent) around `values`, at least `min_span` points apart, within 0-100."""
    low, high = min(values), max(values)
    pad = max((high - low) * 0.1, (min_span - (high - low)) / 2, 0.5)
    low, high = max(0.0, low - pad), min(100.0, high + pad)
    if high - low < min_span:  # against 0 or 100: grow the other way
        low, high = (0.0, min_span) if low == 0 else (100 - min_span, 100.0) if high == 100 else (low, high)
    return low, high


def wants_log_axis(lines: list[Series]) -> bool:
    """A log axis when the runs' peak rates are 10 or more apart (a linear one squashes the smaller)."""
    peaks = [max(s.values) for s in lines if max(s.values) > 0]
    return len(peaks) > 1 and max(peaks) / min(peaks) >= 10


def draw_curves(series: list[Series], out: Path, say=print) -> list[Path]:
    """loss.png, lr.png and accuracy.png in `out` from `series`; one line said for each skipped
    (the figures that no run logged)."""
    made, skipped = [], {}
    for name in YLABELS:
        lines = [s for s in series if s.figure == name]
        if lines:
            made.append(save_png(curve_figure(name, lines), out / f"{name}.png"))
        else:
            skipped.setdefault(
                "no metrics.jsonl among the folders" if not series else SKIPPED[name], []
            ).append(name)
    for why, names in skipped.items():
        say(f"{' and '.join(f'{n}.png' for n in names)} skipped: {why}")
    return made


def bars_figure(points: list[str], columns: dict[str, list[float | None]]) -> Figure:
    """Each column's accuracies (fractions; None: not measured) as bars per point, in percent, every
    bar labelled with its value, the axis zoomed to the values (it says where it starts)."""
    measured = [100 * v for values in columns.values() for v in values if v is not None]
    low, high = zoomed_limits(measured)
    width = 0.8 / len(columns)
    figure = Figure(figsize=(max(5.0, 1.3 * len(points) * len(columns) + 1.5), 4.2), layout="constrained")
    axes = figure.subplots()
    for i, (header, values) in enumerate(columns.items()):
        colour = f"C{i % 10}"
        x = [p + i * width for p, v in enumerate(values) if v is not None]
        heights = [100 * v for v in values if v is not None]
        bars = axes.bar(x, heights, width, label=header, color=colour)
        axes.bar_label(bars, [f"{h:.2f}%" for h in heights], fontsize=8, padding=2)
        for p in (p for p, v in enumerate(values) if v is None):  # not measured at this point
            axes.text(p + i * width, low, "n/a", ha="center", va="bottom", fontsize=8, color=colour)
    axes.set_xticks([p + width * (len(columns) - 1) / 2 for p in range(len(points))], points, fontsize=8)
    axes.set_ylim(low, high)
    axes.yaxis.set_major_formatter(PercentFormatter(100, decimals=1 if high - low < 5 else 0))
    axes.set_ylabel("accuracy")
    if low > 0:
        axes.set_title(f"axis from {low:g}%, not 0: zoomed to the values", fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return figure


def zoomed_limits(values: list[float]) -> tuple[float, float]:
    """Bar-axis limits (percent) that show the differences between `values`: from a whole number
    at least a point below the smallest, with room above the largest for its label."""
    if not values:
        return 0.0, 100.0
    low, high = min(values), max(values)
    bottom = max(0.0, math.floor(low - max(high - low, 1.0)))
    return bottom, high + 0.3 * (high - bottom)


def tsne_figure(points, labels, classes: list[str], title: str) -> Figure:
    """2-D points coloured by class, named by `classes`: a legend up to 20 classes; beyond, each
    class's name at the middle of its points (a legend of 100 entries reads as nothing)."""
    import numpy as np

    points, labels = np.asarray(points), np.asarray(labels)
    many = len(classes) > 20
    figure = Figure(figsize=(7.5 if not many else 8, 6), layout="constrained")
    axes = figure.subplots()
    colours = "turbo" if many else ("tab10" if len(classes) <= 10 else "tab20")
    for k, name in enumerate(classes):
        mine = points[labels == k]
        if not len(mine):
            continue
        colour = _class_colour(colours, k, len(classes))
        axes.scatter(mine[:, 0], mine[:, 1], s=5, color=colour, label=name)
        if many:
            x, y = np.median(mine, axis=0)
            text = axes.annotate(name, (x, y), fontsize=6, ha="center", va="center")
            text.set_path_effects([withStroke(linewidth=2, foreground="white")])  # legible on dots
    if not many:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False, markerscale=2.5)
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    return figure


def _class_colour(name: str, k: int, count: int):
    from matplotlib import colormaps

    cmap = colormaps[name]
    return cmap(k % cmap.N) if name.startswith("tab") else cmap(k / max(count - 1, 1))


def save_png(figure: Figure, path: Path, dpi: int = 110) -> Path:
    """`figure` as a PNG at `path`, written whole or not at all."""
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=dpi)
    return write_atomic(path, png.getvalue())
