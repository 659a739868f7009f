"""NT-Xent: equal to a plain reference; 2 ranks (gloo) equal 1 process on the concatenated batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dist_nt_xent
import pytest
import torch

from trainers import chance_loss, nt_xent


def reference(*views, temperature):
    """Multi-positive NT-Xent written out row by row and pair by pair, in float64: each row's loss is
    the mean over the other views of its image of -log(exp(pos) / sum over every other row)."""
    count, n = len(views), len(views[0])
    z = torch.nn.functional.normalize(torch.cat(views).double(), dim=1)
    total = 0.0
    for i in range(count * n):
        others = sum(torch.exp(z[i] @ z[k] / temperature) for k in range(count * n) if k != i)
        positives = [k for k in range(i % n, count * n, n) if k != i]  # same image, other views
        total += sum(-torch.log(torch.exp(z[i] @ z[p] / temperature) / others) for p in positives) / (
            count - 1
        )
    return total / (count * n)


def simclr_two_view(z1, z2, temperature):
    """The two-view loss as fastclr computed it before V views: F.cross_entropy, positive at the roll."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = (z @ z.T) / temperature
    logits.fill_diagonal_(torch.finfo(logits.dtype).min)
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(z)).roll(len(z1)))


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_equals_the_reference(count, temperature):
    generator = torch.Generator().manual_seed(count)
    views = [torch.randn(7, 16, generator=generator) for _ in range(count)]
    assert nt_xent(*views, temperature=temperature).item() == pytest.approx(
        reference(*views, temperature=temperature).item(), rel=1e-5
    )


def test_two_views_bit_for_bit_the_two_view_loss():
    generator = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(33, 16, generator=generator), torch.randn(33, 16, generator=generator)
    inputs = [x.clone().requires_grad_() for x in (z1, z2, z1, z2)]
    loss = nt_xent(inputs[0], inputs[1], temperature=0.2)
    before = simclr_two_view(inputs[2], inputs[3], 0.2)
    (loss + before).backward()
    assert torch.equal(loss, before)
    assert torch.equal(inputs[0].grad, inputs[2].grad) and torch.equal(inputs[1].grad, inputs[3].grad)


def test_low_temperature_half_precision_stays_finite():
    z1 = torch.randn(64, 128, dtype=torch.bfloat16)
    loss = nt_xent(z1, z1 + 0.01 * torch.randn_like(z1), temperature=0.01)
    assert torch.isfinite(loss) and loss.dtype == torch.float32


@pytest.mark.parametrize("count", [2, 5])
def test_chance_level_is_log_vn_minus_1(count):
    z = torch.ones(8, 4)
    assert nt_xent(*[z] * count, temperature=0.5).item() == pytest.approx(chance_loss(8, count), rel=1e-6)


def test_one_view_refused():
    with pytest.raises(ValueError, match="at least two views"):
        nt_xent(torch.ones(2, 2), temperature=0.5)


def test_temperature_out_of_range():
    with pytest.raises(ValueError, match="temperature 0 outside"):
        nt_xent(torch.ones(2, 2), torch.ones(2, 2), temperature=0)


@pytest.mark.multiproc
def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    """For V = 2 and 3 views: loss and every view's input gradients, asymmetric inputs per rank."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            str(Path(__file__).parent / "dist_nt_xent.py"),
            str(tmp_path),
        ],
        check=True,
        env=env,
        timeout=120,
    )
    batch, world = 6, 2
    for count in dist_nt_xent.VIEWS:
        whole = [v.clone().requires_grad_() for v in dist_nt_xent.views_of(count, world, batch)]
        loss = nt_xent(*whole, temperature=0.2)
        loss.backward()
        for rank in range(world):
            got = torch.load(tmp_path / f"rank{rank}-views{count}.pt")
            mine = slice(rank * batch, (rank + 1) * batch)
            assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
            assert len(got["grads"]) == count
            for grad, view in zip(got["grads"], whole, strict=True):
                # DDP averages gradients over ranks: each rank's gradient is world x the global one.
                torch.testing.assert_close(grad / world, view.grad[mine], rtol=1e-4, atol=1e-6)
