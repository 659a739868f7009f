"""Run under torchrun: rank r extracts features of its uneven share (`rows(r)` images); saves what it got.

The val loader gives ranks shares that differ by one when the set does not split evenly; every rank
must end with every sample once, in rank order.
"""

import sys

import torch
from accelerate import Accelerator

from fastclr.trainers import extract_features


def share(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank r's 3 + 2r images (4 values each, distinct over ranks) and their labels (= r)."""
    rows = 3 + 2 * rank
    images = torch.arange(rows * 4, dtype=torch.float32).reshape(rows, 4) + 100 * rank + 1
    return images, torch.full((rows,), rank)


if __name__ == "__main__":
    accelerator = Accelerator(cpu=True)
    images, labels = share(accelerator.process_index)
    batches = [(images[:2], labels[:2]), (images[2:], labels[2:])]  # the loader's batches of 2, then the rest
    features, gathered = extract_features(torch.nn.Identity(), batches)
    torch.save(
        {"features": features, "labels": gathered}, f"{sys.argv[1]}/rank{accelerator.process_index}.pt"
    )
    accelerator.end_training()
