"""What several command groups of the `fastclr` command share."""

from __future__ import annotations

import os


def say(text: str) -> None:
    """Print once under torchrun / accelerate launch: from the process of rank 0 only."""
    if os.environ.get("RANK", "0") == "0":
        print(text)
