"""What several command groups of the `fastclr` command share."""

from __future__ import annotations

import argparse
import os


def say(text: str) -> None:
    """Print once under torchrun / accelerate launch: from the process of rank 0 only."""
    if os.environ.get("RANK", "0") == "0":
        print(text)


def device(cpu: bool) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and not cpu else "cpu"


def tracking_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases (offline without a login)")
    p.add_argument("--tensorboard", action="store_true", help="log to TensorBoard in the output folder")
