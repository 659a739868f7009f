"""Run under torchrun: each rank takes its slice of one fixed batch of V views (V = 2, 3); saves loss and
input gradients per V."""

import sys

import torch
import torch.distributed as dist

from fastclr.trainers import nt_xent

VIEWS = (2, 3)


def views_of(count: int, world: int, batch: int = 6, dim: int = 5) -> list[torch.Tensor]:
    """The whole batch's views; the first is scaled row by row so no two ranks' inputs look alike."""
    generator = torch.Generator().manual_seed(count)
    first = torch.randn(world * batch, dim, generator=generator) * torch.arange(1, world * batch + 1)[:, None]
    return [first] + [torch.randn(world * batch, dim, generator=generator) for _ in range(count - 1)]


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    batch = 6
    mine = slice(rank * batch, (rank + 1) * batch)
    for count in VIEWS:
        inputs = [v[mine].clone().requires_grad_() for v in views_of(count, world, batch)]
        loss = nt_xent(*inputs, temperature=0.2)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        torch.save(
            {"loss": mean_loss / world, "grads": [x.grad for x in inputs]},
            f"{sys.argv[1]}/rank{rank}-views{count}.pt",
        )
    dist.destroy_process_group()
