"""NT-Xent: equal to a plain reference; 2 ranks (gloo) equal 1 process on the concatenated batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainers import chance_loss, nt_xent


def reference(z1, z2, temperature):
    """SimCLR's loss written out pair by pair, in float64."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [torch.exp(z[i] @ z[k] / temperature) for k in range(2 * n) if k != i]
        total += -torch.log(torch.exp(z[i] @ z[positive] / temperature) / sum(others))
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_equals_the_reference(temperature):
    generator = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(7, 16, generator=generator), torch.randn(7, 16, generator=generator)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(
        reference(z1, z2, temperature).item(), rel=1e-5
    )


def test_low_temperature_half_precision_stays_finite():
    z1 = torch.randn(64, 128, dtype=torch.bfloat16)
    loss = nt_xent(z1, z1 + 0.01 * torch.randn_like(z1), temperature=0.01)
    assert torch.isfinite(loss) and loss.dtype == torch.float32


def test_chance_level_is_log_2n_minus_1():
    z = torch.ones(8, 4)
    assert nt_xent(z, z, 0.5).item() == pytest.approx(chance_loss(8), rel=1e-6)


def test_temperature_out_of_range():
    with pytest.raises(ValueError, match="temperature 0 outside"):
        nt_xent(torch.ones(2, 2), torch.ones(2, 2), 0)


@pytest.mark.multiproc
def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path):
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
    generator = torch.Generator().manual_seed(0)
    batch, dim, world = 6, 5, 2
    z1 = torch.randn(world * batch, dim, generator=generator) * torch.arange(1, world * batch + 1)[:, None]
    z2 = torch.randn(world * batch, dim, generator=generator)
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = nt_xent(a, b, temperature=0.2)
    loss.backward()
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        mine = slice(rank * batch, (rank + 1) * batch)
        assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        # DDP averages gradients over ranks: each rank's gradient is world x the global one.
        torch.testing.assert_close(got["grad1"] / world, a.grad[mine], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["grad2"] / world, b.grad[mine], rtol=1e-4, atol=1e-6)
