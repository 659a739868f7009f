"""What ends a pretrain run early, and how each ending keeps the work.

A signal (SIGTERM from a scheduler, Ctrl-C) sets `StopFlag`; the loop notices it at a step boundary
and checkpoints there. Several processes must stop at the same step, so they agree on the flag,
but only at steps where every rank syncs anyway (`agree`). A dead or hung peer makes a collective
fail: `peer_lost` recognises that, and the run ends with one line naming the last checkpoint. A
loss that is not finite stops the run before anything is saved from it (`check_finite`).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from fastclr.trainers._errors import TrainError
from fastclr.trainers._lock import RunDirError


class StopFlag:
    """Set by SIGTERM/SIGINT while entered; the loop checks it at a step boundary and checkpoints."""

    def __init__(self):
        self.raised = False
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._set)
        return self

    def _set(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def agree(accelerator: Accelerator, flag: bool) -> bool:
    """True on every rank if it is true on any (all ranks must stop at the same step). A collective:
    call it at the same steps on every rank."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def peer_lost(err: RuntimeError) -> bool:
    """A collective failed because a peer process died or stopped answering (gloo, NCCL, the store)."""
    text = str(err)
    return isinstance(err, torch.distributed.DistError) or any(
        mark in text for mark in ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe")
    )


def first_line(err: Exception) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)[:200]


def check_finite(value: float, step: int, epoch: int, last_checkpoint: Path | None) -> None:
    """Stop (TrainError) on a loss that is NaN or infinite, before anything is saved from it."""
    if value != value or value in (float("inf"), float("-inf")):
        raise TrainError(
            f"loss became {value} by step {step} (epoch {epoch}); stopped without saving; last good "
            f"checkpoint: {last_checkpoint or 'none'}; lower optim.lr or use precision=bf16"
        )


def on_main(accelerator: Accelerator, action: Callable[[], None]) -> None:
    """Run `action` on the main process; if it refuses, every rank raises its one line (none waits
    in a collective for a rank that left)."""
    refusal = None
    if accelerator.is_main_process:
        try:
            action()
        except (TrainError, RunDirError) as err:
            refusal = err
    if accelerator.num_processes > 1:
        refusal = broadcast_object_list([refusal])[0]
    if refusal is not None:
        raise refusal
