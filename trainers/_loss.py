"""NT-Xent over negatives from every rank, with a gather that carries gradients back.

With W ranks of batch B, each rank scores its 2B projections against all 2BW;
the result equals single-process NT-Xent on the concatenated batch of W*B,
gradients included (tests/test_loss.py checks it under torchrun).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GatherLayer(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice.

    `accelerator.gather` passes no gradient: other ranks' projections would be
    constants and half the gradient of each negative pair would be lost.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        rows = grad.shape[0] // dist.get_world_size()
        rank = dist.get_rank()
        return grad[rank * rows : (rank + 1) * rows]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss of two views' projections (B x d each), averaged over this rank's 2B rows.

    Logits are float32 whatever the autocast dtype; self-similarity is masked out
    (never subtracted); the positive of row i is its other view, at the rank's offset.
    """
    if not 0 < temperature <= 1:
        raise ValueError(f"temperature {temperature} outside (0, 1]")
    rank, world_size = world()
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # 2B x d: [view 1; view 2]
    everyone = GatherLayer.apply(z) if world_size > 1 else z  # 2BW x d, rank-major
    logits = (z @ everyone.T) / temperature  # 2B x 2BW, one matmul
    rows = z.shape[0]
    # Self-similarity: the diagonal of the rank's own block, masked in place (no 2B x 2BW mask to build).
    logits[:, rank * rows : (rank + 1) * rows].fill_diagonal_(torch.finfo(logits.dtype).min)
    positive = torch.arange(rows, device=z.device).roll(rows // 2) + rank * rows  # the other view
    return F.cross_entropy(logits, positive)


def chance_loss(global_batch: int) -> float:
    """The loss of a network that cannot tell pairs apart: ln(2N - 1) for N images across ranks."""
    return float(torch.log(torch.tensor(2.0 * global_batch - 1)))
