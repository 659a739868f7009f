"""Run under torchrun: each rank trains the online probe on its slice of fixed batches; saves the head."""

import sys

import torch
import torch.distributed as dist

from fastclr.trainers._probe import OnlineProbe


def batches(world: int, per_rank: int, steps: int = 3, dim: int = 16, classes: int = 4):
    """(view1, view2, labels) of `world * per_rank` images per step, the same on every call."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        labels = torch.randint(0, classes, (world * per_rank,), generator=generator)
        yield (
            torch.randn(world * per_rank, dim, generator=generator),
            torch.randn(world * per_rank, dim, generator=generator),
            labels,
        )


def reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(tensor)
    return tensor


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    probe = OnlineProbe(16, 4, lr=0.5, device=torch.device("cpu"), seed=0)
    mine = slice(rank * 5, (rank + 1) * 5)
    for view1, view2, labels in batches(world, 5):
        probe.step(torch.cat([view1[mine], view2[mine]]), labels[mine])
    top1 = probe.train_top1(reduce_sum)
    torch.save({"head": probe.head.state_dict(), "top1": top1}, f"{sys.argv[1]}/rank{rank}.pt")
    dist.destroy_process_group()
