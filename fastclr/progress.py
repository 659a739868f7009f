"""Progress bars for every package: tqdm on a terminal,
whole lines without carriage returns when stderr goes to a file or a pipe (logs, Slurm, CI)."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable

from tqdm import tqdm

# Seconds between lines when stderr is not a terminal: a log gets a heartbeat, not a flood.
LINE_INTERVAL = 10.0


class _Lines(io.TextIOBase):
    """A stream for tqdm that writes each redraw as one line, dropping its \\r and padding, and
    skipping a redraw whose count has not moved (the final one on close repeats the last)."""

    def __init__(self, stream):
        self.stream = stream
        self.last = None

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        count = line.rsplit("[", 1)[0]  # "desc: 40%|####      | 4/10 " without the timing
        if line and count != self.last:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last = count
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(
    iterable: Iterable | None = None,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    enabled: bool = True,
    **kwargs,
) -> tqdm:
    """A tqdm bar on stderr; `enabled=False` (any process but the main one) shows nothing; other
    keywords go to tqdm."""
    stream = sys.stderr
    terminal = hasattr(stream, "isatty") and stream.isatty()
    options = {"mininterval": 0.1 if terminal else LINE_INTERVAL, "dynamic_ncols": terminal, **kwargs}
    file = stream if terminal else _Lines(stream)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled, file=file, **options)
