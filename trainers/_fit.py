"""The classifier loop: `finetune`, `supervised` (and so the demo's baseline) train through it.

    optimizer = create_classifier_optimizer("sgd", [{"params": model.parameters(), "lr": 0.1}], 5e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    schedule = create_classifier_schedule(optimizer, epochs, len(train_loader), decay_epochs=[])
    history = fit_classifier(model, optimizer, schedule, train_loader, val_loader, epochs, accelerator)

A step: forward (Mixup/CutMix through timm when a mixer is given), cross-entropy, backward, optimiser
step, schedule step. The loss is summed on the device and read once an epoch, with the val top-1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from fastclr.progress import progress
from fastclr.trainers._eval_config import CLASSIFIER_OPTIMIZERS
from fastclr.trainers._tracking import MetricsLog

# name (one of CLASSIFIER_OPTIMIZERS, the settings' choices) -> (parameter groups, each with its
# "lr"; weight decay) -> optimiser
_OPTIMIZERS: dict[str, Callable[[list[dict], float], torch.optim.Optimizer]] = {
    "sgd": lambda groups, wd: torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=wd),
    "adamw": lambda groups, wd: torch.optim.AdamW(groups, weight_decay=wd),
}


def create_classifier_optimizer(name: str, groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    """`sgd` (momentum 0.9, nesterov) or `adamw` over parameter groups that carry their own `lr`."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(CLASSIFIER_OPTIMIZERS)}")
    return _OPTIMIZERS[name](groups, weight_decay)


def create_classifier_schedule(
    optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, decay_epochs: list[int] = ()
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once a step: cosine to 0 over the run, or x0.1 at each of `decay_epochs`."""
    if decay_epochs:
        milestones = [e * steps_per_epoch for e in decay_epochs]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, 0.1)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * steps_per_epoch))


def create_mixer(mixup: float, cutmix: float, label_smoothing: float, num_classes: int) -> Mixup | None:
    """timm's Mixup/CutMix (soft targets, smoothed), or None when both alphas are 0."""
    if not (mixup or cutmix):
        return None
    return Mixup(
        mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes
    )


@torch.no_grad()
def top1(model: nn.Module, loader, accelerator: Accelerator) -> float:
    """Top-1 over every sample of every rank's share of the val loader (each sample counted once)."""
    model.eval()
    counts = torch.zeros(2, device=accelerator.device)
    for images, labels in loader:
        hits = (model(images).argmax(1) == labels).sum()
        counts += torch.stack([hits, torch.tensor(len(labels))]).to(counts)
    correct, total = accelerator.reduce(counts, reduction="sum").tolist()
    return correct / total


def fit_classifier(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    train_loader,
    val_loader,
    epochs: int,
    accelerator: Accelerator,
    mixer: Mixup | None = None,
    label_smoothing: float = 0.0,
    frozen: nn.Module | None = None,
    log: MetricsLog | None = None,
) -> list[dict]:
    """Train `model` (already through `accelerator.prepare`, with its optimiser) for `epochs`.

    Args:
        schedule: stepped after every optimiser step.
        mixer: a timm `Mixup`; batches of odd size (it needs pairs) train on plain labels.
        frozen: a part kept in eval mode, so its BatchNorm statistics stay as they are.
        log: where each epoch's record goes (also to the accelerator's trackers).

    Returns:
        One record an epoch: step, epoch, lr (the first group's, as the epoch starts), train_loss,
        val_top1.
    """
    soft_targets = SoftTargetCrossEntropy()
    history = []
    bar = progress(range(epochs), "epochs", unit="epoch", enabled=accelerator.is_main_process)
    for epoch in bar:
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        if frozen is not None:
            frozen.eval()
        loss_sum = torch.zeros((), device=accelerator.device)
        for images, labels in train_loader:
            if mixer is not None and len(labels) % 2 == 0:
                images, targets = mixer(images, labels)
                loss = soft_targets(model(images), targets)
            else:
                loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
        record = {
            "step": epoch + 1,
            "epoch": epoch,
            "lr": lr,
            "train_loss": (loss_sum / len(train_loader)).item(),
            "val_top1": top1(model, val_loader, accelerator),
        }
        if log is not None:
            log.write(record)
        accelerator.log(record, step=epoch + 1)
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_top1=f"{record['val_top1']:.2%}")
    return history
