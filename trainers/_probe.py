"""The online linear probe: accuracy watched while pretraining, solo-learn's way.

A linear head on the encoder's detached features of both views, trained on the
shards' labels with its own SGD optimiser, one step per training step. It never
changes the encoder: it sees features without their graph, and the encoder's
optimiser never sees its parameters. Its train top-1 is counted on the device
and read only when the loop logs (since the last log line) and at an epoch's end
(over the epoch); its val top-1 comes from the kNN monitor's val features.
Every rank sees other images, so the head's gradients are averaged over ranks
each step: the heads stay equal and rank 0's is checkpointed.
It reads L2-normalised features, as the kNN monitor and `fastclr linear` do.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

MOMENTUM = 0.9


class OnlineProbe:
    """Linear head + SGD on detached, L2-normalised encoder features; counters stay on the device."""

    def __init__(self, num_features: int, num_classes: int, lr: float, device: torch.device, seed: int):
        with torch.random.fork_rng(devices=[]):  # the global RNG stream stays as without the probe
            torch.manual_seed(seed)
            self.head = nn.Linear(num_features, num_classes)
        self.head.to(device)
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=lr, momentum=MOMENTUM)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = torch.zeros((), dtype=torch.long, device=device)
        # the epoch's counts: this rank's since the last fold, on the device (updated in place, so
        # a captured CUDA graph keeps counting), and every rank's folded before, on the host
        self.epoch_counts = torch.zeros(2, dtype=torch.long, device=device)
        self.epoch_folded = [0, 0]

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """One SGD step on `features` (the views of `labels`' images, stacked view by view)."""
        inputs = F.normalize(features.detach().float(), dim=1)
        targets = labels.repeat(inputs.shape[0] // labels.shape[0])
        with torch.enable_grad():
            logits = self.head(inputs)
            loss = F.cross_entropy(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_over_ranks([p.grad for p in self.head.parameters()])
        self.optimizer.step()
        correct = (logits.detach().argmax(1) == targets).sum()
        self.correct += correct
        self.seen += targets.numel()
        self.epoch_counts[0] += correct
        self.epoch_counts[1] += targets.numel()

    def train_top1(self, reduce=None) -> float:
        """Top-1 since the last call, over every rank (`reduce`: a sum over ranks, e.g.
        `accelerator.reduce`); reads to the host, so call it at log steps only. Resets the count."""
        counts = torch.stack([self.correct, self.seen])
        if reduce is not None:
            counts = reduce(counts)
        correct, seen = counts.tolist()
        self.correct.zero_()
        self.seen.zero_()
        return correct / max(seen, 1)

    def fold_epoch(self, reduce=None) -> None:
        """Move the epoch's device counts, summed over ranks by `reduce`, to the host, where the
        checkpoint keeps them (rank 0's probe is saved, and this total is the same on every rank).
        A collective with `reduce`: every rank calls it, before each checkpoint."""
        counts = self.epoch_counts if reduce is None else reduce(self.epoch_counts.clone())
        self.epoch_folded = [a + b for a, b in zip(self.epoch_folded, counts.tolist(), strict=True)]
        self.epoch_counts.zero_()

    def epoch_train_top1(self) -> float:
        """Top-1 over the epoch's training steps folded so far (`fold_epoch` first); resets the
        epoch's counts. The log-step windows of `train_top1` are not touched."""
        (correct, seen), self.epoch_folded = self.epoch_folded, [0, 0]
        return correct / max(seen, 1)

    @torch.no_grad()
    def val_top1(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 on held-out features (already L2-normalised, as the kNN monitor extracts them)."""
        predicted = self.head(F.normalize(features.float(), dim=1)).argmax(1)
        return (predicted == labels).float().mean().item()

    def state_dict(self) -> dict:
        """Head, optimiser and the epoch's counts so far (fold them first: `fold_epoch`)."""
        return {
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch_counts": list(self.epoch_folded),
        }

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch_folded = list(state.get("epoch_counts", [0, 0]))  # older checkpoints have none


def _average_over_ranks(grads: list[torch.Tensor]) -> None:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([g.flatten() for g in grads])  # one collective for weight and bias
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def create_probe(cfg, manifest: dict, num_features: int, accelerator) -> OnlineProbe | None:
    """The run's online probe (`cfg.online_probe`, a PretrainConfig's), or None: switched off, or shards
    without labels (then one note)."""
    if not cfg.online_probe:
        return None
    if not manifest.get("labeled"):
        accelerator.print(
            "note: online probe off: the pretrain shards hold no labels (manifest labeled: false)"
        )
        return None
    return OnlineProbe(
        num_features, manifest["num_classes"], cfg.online_probe_lr, accelerator.device, cfg.seed
    )
