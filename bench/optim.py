"""Optimiser step time alone, on a real model's parameters: multi-tensor LARS against timm's.

    python -m fastclr.bench.optim --json bench/results/optim-cpu.json
    python -m fastclr.bench.optim --device cuda --json bench/results/optim-gpu.json

For each optimiser of --optimizers: the model's parameters (SimCLR encoder and
head, as pretraining builds them) get fixed random gradients; after --warmup
steps, --repeats timings of --steps `optimizer.step()` calls each, the
optimisers in alternation, synchronised around each timing on CUDA. Reported:
the median milliseconds per step, and each optimiser's speed relative to the first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import timm
import torch

from fastclr.bench.convert import environment, parse_timing_arguments, write_results
from fastclr.trainers import PretrainConfig, build_model, create_optimizer


def measure(optimizer, device: torch.device, steps: int) -> float:
    """Milliseconds per optimiser step over `steps` steps."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--optimizers", nargs="+", default=["lars_timm", "lars"])
    parser.add_argument("--steps", type=int, default=20)
    args = parse_timing_arguments(parser)
    device = torch.device(args.device)
    cfg = PretrainConfig()
    cfg.model.encoder, cfg.model.cifar_stem = args.model, True
    model = build_model(cfg, 3).to(device)
    generator = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=generator) * 1e-3).to(device)
    params = list(model.parameters())
    results = {
        "command": " ".join(["python -m fastclr.bench.optim", *sys.argv[1:]]),
        **environment(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "tensors": len(params),
        "parameters": sum(p.numel() for p in params),
        "rows": [],
    }
    optimizers = {name: create_optimizer(model, name, 0.3, 1e-6, 0.9) for name in args.optimizers}
    for optimizer in optimizers.values():
        measure(optimizer, device, args.warmup)
    runs = {name: [] for name in optimizers}
    for _ in range(args.repeats):  # alternate, so machine noise hits every optimiser alike
        for name, optimizer in optimizers.items():
            runs[name].append(measure(optimizer, device, args.steps))
    for name, timings in runs.items():
        results["rows"].append(
            {
                "optimizer": name,
                "ms": round(statistics.median(timings), 3),
                "runs": [round(t, 3) for t in timings],
            }
        )
    first = results["rows"][0]["ms"]
    for row in results["rows"]:
        row["speedup"] = round(first / row["ms"], 2)  # over the first optimiser named
    write_results(results, args.json)


if __name__ == "__main__":
    main()
