"""Where a training step's time goes: torch.profiler over steps fed by the DALI loader.

    python -m fastclr.bench.profile --json bench/results/profile-cpu.json
    python -m fastclr.bench.profile --device cuda --precision bf16 --channels-last --batch-size 512 \\
        --augment-device gpu --json profile.json --trace trace.json

The pretrain loop's step (bench.train's, so graphs and compile options apply)
runs --warmup steps, then --steps under the profiler. On CUDA the profiler sees
every kernel of the process, DALI's included: the table names the kernels that
take the GPU's time, and `device_busy` (kernel time / wall time; streams may
overlap, so it can pass 1) says how much of the window the GPU was working. The
GPU speed levers (BENCHMARKS.md) are tried in the order this points to.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from fastclr.bench.convert import environment, write_results
from fastclr.bench.pipeline import batches_forever
from fastclr.bench.shard_sets import make_shards
from fastclr.bench.train import make_step, pretrain_config
from fastclr.pipelines import create_loader, open_shards
from fastclr.trainers import INPUT_DTYPE, new_accelerator


def _time(event, kind: str) -> float:
    """An event's self time on the device or the CPU, in ms (the attribute name moved in torch 2.4)."""
    names = (
        ("self_device_time_total", "self_cuda_time_total") if kind == "device" else ("self_cpu_time_total",)
    )
    return next((getattr(event, n) for n in names if hasattr(event, n)), 0.0) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=".gpu-data/cifar10-jpeg.tar.gz")
    parser.add_argument("--data", help="folder to keep the shards in between runs (default: temporary)")
    parser.add_argument(
        "--dataset", default="cifar10-raw", choices=["cifar10-raw", "cifar10-jpeg", "synthetic224-jpeg"]
    )
    parser.add_argument("--synthetic", type=int, default=2048)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=sorted(INPUT_DTYPE), default="fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--compile", default="off")
    parser.add_argument("--graphs", default="off", choices=["off", "on"])
    parser.add_argument("--optimizer", default="lars")
    parser.add_argument("--augment-device", default="auto", choices=["auto", "gpu", "cpu"])
    parser.add_argument("--dali-threads", type=int)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=25, help="rows of the table")
    parser.add_argument("--trace", help="write a Chrome trace here")
    parser.add_argument("--json")
    args = parser.parse_args()
    accelerator = new_accelerator(cpu=args.device == "cpu")
    cuda = accelerator.device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        folder, size = make_shards(Path(args.src), Path(args.data or tmp), args.synthetic)[args.dataset]
        variant = {
            "compile": args.compile,
            "graphs": args.graphs,
            "optimizer": args.optimizer,
            "augment_device": args.augment_device,
            "prefetch": args.prefetch,
        }
        cfg = pretrain_config(args, args.model, size, args.batch_size, variant)
        data = open_shards(folder)
        step, timing = make_step(cfg, accelerator, data.channels)
        loader = create_loader(
            "pretrain",
            data,
            batch_size=args.batch_size,
            size=size,
            device=accelerator.device,
            dtype=INPUT_DTYPE[args.precision] if cuda else torch.float32,
            channels_last=args.channels_last,
            num_threads=args.dali_threads,
            prefetch=args.prefetch,
            augment_device=args.augment_device,
        )
        batches = batches_forever(loader)
        for _ in range(args.warmup):
            step(next(batches))
        activities = [torch.profiler.ProfilerActivity.CPU]
        if cuda:
            torch.cuda.synchronize()
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profiler:
            started = time.perf_counter()
            for _ in range(args.steps):
                step(next(batches))
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - started
        events = profiler.key_averages()
        kind = "device" if cuda else "cpu"
        ranked = sorted(events, key=lambda e: _time(e, kind), reverse=True)
        device_ms = sum(_time(e, "device") for e in events)
        results = {
            "command": " ".join(["python -m fastclr.bench.profile", *sys.argv[1:]]),
            **environment(),
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__,
            "dataset": args.dataset,
            "model": args.model,
            "batch_size": args.batch_size,
            "augment_device": loader.augment_device,
            "dali_threads": loader.num_threads,
            "variant": variant,
            "first_step_seconds": round(timing["first_step_seconds"], 3),
            "steps": args.steps,
            "wall_ms_per_step": round(1000 * wall / args.steps, 3),
            "images_per_s": round(args.steps * args.batch_size / wall, 1),
            "device_busy": round(device_ms / (1000 * wall), 3) if cuda else None,
            "top": [
                {
                    "name": e.key[:120],
                    "calls": e.count,
                    f"self_{kind}_ms_per_step": round(_time(e, kind) / args.steps, 4),
                    "self_cpu_ms_per_step": round(_time(e, "cpu") / args.steps, 4),
                }
                for e in ranked[: args.top]
            ],
        }
        if args.trace:
            profiler.export_chrome_trace(args.trace)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
