"""confusion.png: where an evaluation's predictions go, per true class.

Each row is a true class, coloured by the share of its images predicted as each class (so a small
class reads as clearly as a big one), its image count beside its name; the title gives the top-1.
Up to `NUMBERS_UP_TO` classes every cell prints its percent; beyond, the numbers would overlap and
the colours alone carry it, and beyond `NAMES_UP_TO` the class names are dropped too.
"""

from __future__ import annotations

import io

import numpy as np

NUMBERS_UP_TO = 20
NAMES_UP_TO = 40


def row_percent(matrix) -> np.ndarray:
    """Percent of each true class (row) predicted as each class; 0 for a class without images."""
    matrix = np.asarray(matrix, dtype=float)
    return 100 * matrix / matrix.sum(1, keepdims=True).clip(min=1)


def confusion_figure(matrix, classes: list[str]):
    """The matplotlib Figure of `matrix` (counts, rows true, columns predicted) over `classes`."""
    from matplotlib.figure import Figure

    matrix, count = np.asarray(matrix), len(classes)
    share = row_percent(matrix)
    side = min(14.0, 3.5 + 0.45 * count)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(image, ax=axes, shrink=0.8, label="% of the true class's images")
    if count <= NUMBERS_UP_TO:
        size = 8 if count <= 12 else 6
        for (row, column), value in np.ndenumerate(share):
            if matrix[row, column]:
                text = f"{value:.0f}" if value >= 1 else "<1"
                colour = "white" if value > 55 else "black"
                axes.text(column, row, text, ha="center", va="center", fontsize=size, color=colour)
    if count <= NAMES_UP_TO:
        size = 8 if count <= 20 else 6
        rows = [f"{name} ({n})" for name, n in zip(classes, matrix.sum(1), strict=True)]
        axes.set_xticks(range(count), classes, rotation=90, fontsize=size)
        axes.set_yticks(range(count), rows, fontsize=size)
    else:
        axes.set_xticks([])
        axes.set_yticks([])
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class (images)")
    total = matrix.sum()
    axes.set_title(f"top-1 {matrix.trace() / max(total, 1):.2%} on {total} images", fontsize=10)
    return figure


def confusion_png(matrix, classes: list[str]) -> bytes:
    png = io.BytesIO()
    confusion_figure(matrix, classes).savefig(png, format="png", dpi=110)
    return png.getvalue()
