"""NT-Xent over negatives from every rank, with a gather that carries gradients back.

With W ranks of batch B and V views per image, each rank scores its VB projections against all VBW;
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


def positive_columns(views: int, batch: int, offset: int, device: torch.device) -> torch.Tensor:
    """(V*B, V-1) column indices of each row's positives: the other V-1 views of its image.

    Rows are laid out view-major, [view 1 of B images; view 2; ...]; `offset` is where this
    rank's rows start among the gathered ones. Built from aranges: no data-dependent shape.
    """
    image = torch.arange(batch, device=device)
    own_view = torch.arange(views, device=device)[:, None, None]  # V x 1 x 1
    shift = torch.arange(1, views, device=device)[None, :, None]  # 1 x V-1 x 1: every other view
    other_view = (own_view + shift) % views  # V x V-1 x 1
    columns = other_view * batch + image  # V x V-1 x B
    return columns.permute(0, 2, 1).reshape(views * batch, views - 1) + offset


def nt_xent(*views: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent of V >= 2 views' projections (B x d each), averaged over this rank's V*B rows.

    Each row's positives are the other V-1 views of its image; its denominator is every
    other row of every rank; its loss is the mean over its positives of -log softmax. With
    two views this is SimCLR's loss. Logits are float32 whatever the autocast dtype;
    self-similarity is masked out (never subtracted).
    """
    if not all(isinstance(v, torch.Tensor) for v in views):
        raise TypeError("nt_xent takes projections as positional arguments and temperature by keyword")
    if len(views) < 2:
        raise ValueError(f"nt_xent needs at least two views, got {len(views)}")
    if not 0 < temperature <= 1:
        raise ValueError(f"temperature {temperature} outside (0, 1]")
    rank, world_size = world()
    batch = views[0].shape[0]
    z = F.normalize(torch.cat(views).float(), dim=1)  # VB x d: [view 1; view 2; ...]
    everyone = GatherLayer.apply(z) if world_size > 1 else z  # VBW x d, rank-major
    logits = (z @ everyone.T) / temperature  # VB x VBW, one matmul
    rows = z.shape[0]
    # Self-similarity: the diagonal of the rank's own block, masked in place (no VB x VBW mask to build).
    logits[:, rank * rows : (rank + 1) * rows].fill_diagonal_(torch.finfo(logits.dtype).min)
    positives = positive_columns(len(views), batch, rank * rows, z.device)
    # F.cross_entropy's own steps, log_softmax then nll_loss, once per positive: at V = 2 bit for bit
    # SimCLR's F.cross_entropy form, and for any V no V-fold copy of the logits.
    log_p = logits.log_softmax(dim=1)
    return sum(F.nll_loss(log_p, positives[:, k]) for k in range(len(views) - 1)) / (len(views) - 1)


def chance_loss(global_batch: int, views: int = 2) -> float:
    """The loss of a network that cannot tell views apart: ln(VN - 1) for N images of V views across ranks."""
    return float(torch.log(torch.tensor(float(views) * global_batch - 1)))


class NTXent:
    """The criterion the pretrain step calls: `criterion(*projections) -> loss` (trainers/_losses.py)."""

    def __init__(self, temperature: float = 0.5):
        self.temperature = temperature

    def __call__(self, *views: torch.Tensor) -> torch.Tensor:
        return nt_xent(*views, temperature=self.temperature)

    def chance(self, global_batch: int, views: int) -> float:
        """The loss of an encoder that cannot tell images apart (a stuck run sits here)."""
        return chance_loss(global_batch, views)
