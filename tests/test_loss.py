"""NT-Xent: equal to a plain reference; 2 ranks (gloo) equal 1 process on the concatenated batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dist_nt_xent
import pytest
import torch

from fastclr.trainers import chance_loss, nt_xent


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


PEAK_MEMORY = """
import importlib.util, os, resource, sys, torch
spec = importlib.util.spec_from_file_location("loss", sys.argv[1])  # the module alone: torch, no DALI
loss = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loss)
loss.nt_xent(torch.randn(4, 64), torch.randn(4, 64), temperature=0.5)  # libraries warmed up
for views, batch in [(2, 2048), (8, 512)]:
    z = [torch.randn(batch, 64, requires_grad=True) for _ in range(views)]
    if os.fork() == 0:  # a child's peak RSS starts from its RSS now, not from the imports' peak
        before = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        loss.nt_xent(*z, temperature=0.5).backward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        print((peak - before) / (views * batch) ** 2 / 4, flush=True)
        os._exit(0)
    os.wait()
"""


def test_peak_memory_is_three_logit_matrices():
    """Forward + backward hold at most logits, log-softmax and one gradient of (V B)^2 float32 at once,
    for V = 2 and 8 (BENCHMARKS.md sizes the largest V x B from it); a dense V B x V B float target
    would add one. V B = 4096: 64 MiB matrices, above glibc's largest mmap threshold, so the peak RSS
    counts them (3.4 of them with the autograd engine's own memory)."""
    module = Path(__file__).parent.parent / "trainers" / "_loss.py"
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(module)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
        check=True,
    )
    peaks = [float(line) for line in result.stdout.split()]
    assert len(peaks) == 2 and all(2.5 < peak < 3.8 for peak in peaks), peaks


def test_low_temperature_half_precision_stays_finite():
    z1 = torch.randn(64, 128, dtype=torch.bfloat16)
    loss = nt_xent(z1, z1 + 0.01 * torch.randn_like(z1), temperature=0.01)
    assert torch.isfinite(loss) and loss.dtype == torch.float32


@pytest.mark.parametrize("count", [2, 5])
def test_chance_level_is_log_vn_minus_1(count):
    z = torch.ones(8, 4)
    assert nt_xent(*[z] * count, temperature=0.5).item() == pytest.approx(chance_loss(8, count), rel=1e-6)


def test_one_view_or_a_positional_temperature_refused():
    with pytest.raises(ValueError, match="at least two views"):
        nt_xent(torch.ones(2, 2), temperature=0.5)
    with pytest.raises(TypeError, match="temperature by keyword"):
        nt_xent(torch.ones(2, 2), torch.ones(2, 2), 0.5)


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
