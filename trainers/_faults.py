"""What ends a pretrain run early, and how each ending keeps the work.

A signal (SIGTERM from a scheduler, Ctrl-C) sets `StopFlag`; the loop notices it at a step boundary
and checkpoints there. Several processes must stop at the same step, so they agree on the flag,
but only at steps where every rank syncs anyway (`agree`). A dead or hung peer makes a collective
fail: `peer_lost` recognises that, and the run ends with one line naming the last checkpoint. A
loss that is not finite stops the run before anything is saved from it (`check_finite`). What one
process finds (a file it cannot read) every process must act on: `on_main`, `first_failure`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

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


def check_finite(value: float, run) -> None:
    """Stop (TrainError) on a loss that is NaN or infinite, before anything is saved from it. `run`
    (trainers/_setup.py's Run) tells the last checkpoint known good and what this run started from:
    its checkpoint was verified and its weights finite, so the steps since then diverged."""
    if value != value or value in (float("inf"), float("-inf")):
        start = (
            f"this run resumed from {run.resumed_from}, whose files verified and whose weights and "
            "optimiser state were finite"
            if run.resumed_from is not None
            else "this run started from fresh weights"
        )
        raise TrainError(
            f"loss became {value} by step {run.state.global_step} (epoch {run.state.epoch}); stopped "
            f"without saving; last good checkpoint: {run.latest_checkpoint() or 'none'}; {start}, so "
            "training diverged since: lower optim.lr or use precision=bf16"
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


def first_failure(accelerator: Accelerator, failure: str | None) -> str | None:
    """The failure of the first process that had one (each passes its own, None for none), on every
    process: all then act on it together. A collective: call it at the same point on every rank."""
    if accelerator.num_processes == 1:
        return failure
    return next((f for f in gather_object([failure]) if f is not None), None)
