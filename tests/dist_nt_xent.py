"""Run under torchrun: each rank takes its slice of one fixed batch; saves loss and input gradients."""

import sys

import torch
import torch.distributed as dist

from trainers import nt_xent

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
generator = torch.Generator().manual_seed(0)
batch, dim = 6, 5
z1 = torch.randn(world * batch, dim, generator=generator) * torch.arange(1, world * batch + 1)[:, None]
z2 = torch.randn(world * batch, dim, generator=generator)
mine = slice(rank * batch, (rank + 1) * batch)
a, b = z1[mine].clone().requires_grad_(), z2[mine].clone().requires_grad_()
loss = nt_xent(a, b, temperature=0.2)
loss.backward()
mean_loss = loss.detach().clone()
dist.all_reduce(mean_loss)
torch.save({"loss": mean_loss / world, "grad1": a.grad, "grad2": b.grad}, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
