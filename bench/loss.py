"""NT-Xent forward and backward time, alone: the loss part of every training step.

    python -m fastclr.bench.loss --json bench/results/loss-cpu.json
    python -m fastclr.bench.loss --device cuda --batch-sizes 512 1024 4096 --json bench/results/loss-gpu.json

Times `trainers.nt_xent` on random projections (B x d per view) after --warmup
calls: the median of --repeats timings of --calls calls each, synchronised
around each timing on CUDA. Run it at two commits for a before/after figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from fastclr.bench.convert import environment, parse_timing_arguments, write_results
from fastclr.trainers import nt_xent


def measure(batch: int, dim: int, device: str, calls: int, warmup: int, repeats: int) -> list[float]:
    """Milliseconds per forward + backward, one figure per repeat."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    z1, z2 = (torch.randn(batch, dim, generator=generator).to(device).requires_grad_() for _ in range(2))
    cuda = device.startswith("cuda")

    def call():
        nt_xent(z1, z2, temperature=0.5).backward()

    for _ in range(warmup):
        call()
    timings = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(calls):
            call()
        if cuda:
            torch.cuda.synchronize()
        timings.append(1000 * (time.perf_counter() - started) / calls)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--dim", type=int, default=128, help="projection width")
    parser.add_argument("--calls", type=int, default=10)
    args = parse_timing_arguments(parser)
    cuda = args.device.startswith("cuda")
    results = {
        "command": " ".join(["python -m fastclr.bench.loss", *sys.argv[1:]]),
        **environment(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dim": args.dim,
        "rows": [],
    }
    for batch in args.batch_sizes:
        timings = measure(batch, args.dim, args.device, args.calls, args.warmup, args.repeats)
        results["rows"].append(
            {
                "batch_size": batch,
                "ms": round(statistics.median(timings), 3),
                "runs": [round(t, 3) for t in timings],
            }
        )
    write_results(results, args.json)


if __name__ == "__main__":
    main()
