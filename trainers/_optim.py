"""Optimisers and schedules from timm, with the SimCLR conventions.

No weight decay (and so no LARS adaptation) on norms and biases; the learning
rate is scaled by the global batch; the schedule counts optimiser steps and is
never passed through `accelerator.prepare`, so it does not step once per process.
"""

from __future__ import annotations

import math

from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler
from torch import nn
from torch.optim import Optimizer

from fastclr.trainers._lars import Lars

# lars: our multi-tensor LARS (trainers/_lars.py); lars_timm: timm's, its reference and "before" figure
OPTIMIZERS = ("lars", "lars_timm", "sgd", "adam", "adamw", "lamb")
LR_SCALING = ("none", "linear", "sqrt")
SCHEDULES = ("cosine", "step")


def scaled_lr(lr: float, global_batch: int, rule: str) -> float:
    """`linear`: lr * B / 256 (SimCLR); `sqrt`: lr * sqrt(B) (SimCLR's small-batch rule); `none`: lr."""
    if rule == "linear":
        return lr * global_batch / 256
    if rule == "sqrt":
        return lr * math.sqrt(global_batch)
    if rule == "none":
        return lr
    raise ValueError(f"unknown lr_scaling {rule!r}; choose one of: {', '.join(LR_SCALING)}")


def create_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float
) -> Optimizer:
    """The optimiser; parameters with ndim <= 1 (norms, biases) go to a group without weight decay.

    LARS adapts only groups with weight decay (always_adapt=False), so those
    parameters are neither decayed nor trust-ratio scaled. `lars` is the
    multi-tensor one, the rest are timm's (`lars_timm` is timm's LARS).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if name == "lars":
        return Lars(param_groups_weight_decay(model, weight_decay), lr=lr, momentum=momentum)
    kwargs = {"momentum": momentum} if name in ("lars_timm", "sgd") else {}
    return create_optimizer_v2(
        model,
        opt=name.removesuffix("_timm"),
        lr=lr,
        weight_decay=weight_decay,
        filter_bias_and_bn=True,
        **kwargs,
    )


def create_scheduler(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int,
    min_lr: float,
    schedule: str = "cosine",
    decay_steps: list[int] | None = None,
    decay_rate: float = 0.1,
):
    """Linear warm-up from 0, then cosine to min_lr or step decay; call `step_update(optimizer_steps)`.

    `decay_steps` count from the start of the run, warm-up included (as "decay at epoch 150" means).
    """
    if schedule == "cosine":
        return CosineLRScheduler(
            optimizer,
            t_initial=max(1, total_steps - warmup_steps),
            lr_min=min_lr,
            warmup_t=warmup_steps,
            warmup_lr_init=0.0,
            warmup_prefix=True,
            t_in_epochs=False,
        )
    if schedule == "step":
        return MultiStepLRScheduler(
            optimizer,
            decay_t=[t + 1 for t in decay_steps or []],  # timm decays at t == m - 1; ours from step m
            decay_rate=decay_rate,
            warmup_t=warmup_steps,
            warmup_lr_init=0.0,
            warmup_prefix=False,  # decay steps count from the start, not from the end of warm-up
            t_in_epochs=False,
        )
    raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
