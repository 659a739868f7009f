"""Heads on encoder features, and the linear probe on cached features.

The probe is the fast protocol: features are extracted once with the val
transforms from a frozen encoder in eval mode, then a linear classifier is fit
on those tensors, full batch (seconds on a CPU). Heads trained on augmented
views go through the classifier loop instead (`trainers._fit`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastclr.progress import progress
from fastclr.trainers._eval_config import HEADS


def make_head(kind: str, in_dim: int, num_classes: int) -> nn.Module:
    """`linear`, or `mlp2` (two layers, as launch/configs/c1_transfer_cifar100_ssl.yaml trains)."""
    if kind == "linear":
        return nn.Linear(in_dim, num_classes)
    if kind == "mlp2":
        return nn.Sequential(
            nn.Linear(in_dim, in_dim),
            nn.BatchNorm1d(in_dim),
            nn.ReLU(inplace=True),
            nn.Linear(in_dim, num_classes),
        )
    raise ValueError(f"unknown head {kind!r}; choose one of: {', '.join(HEADS)}")


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 300,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    seed: int = 0,
    head: str = "linear",
    show_progress: bool = False,
) -> nn.Module:
    """Full-batch Adam on standardised features; returns standardisation + head (`linear` or `mlp2`).

    The head is made after seeding, so `seed` fixes its initialisation too.
    """
    torch.manual_seed(seed)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    linear = make_head(head, features.shape[1], num_classes).to(features.device)
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    inputs = (features - mean) / std
    for _ in progress(range(epochs), f"{head} probe", unit="step", enabled=show_progress):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(linear(inputs), labels).backward()
        optimizer.step()
    return _Standardised(mean, std, linear).eval()


class _Standardised(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, linear: nn.Linear):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = linear

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


@torch.no_grad()
def probe_accuracy(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 of a probe (`fit_linear_probe`'s) on cached features."""
    return (probe(features).argmax(1) == labels).float().mean().item()
