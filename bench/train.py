"""Training images per second: the model alone, end to end through DALI, and through the DataLoader.

    python -m fastclr.bench.train --json bench/results/train-cpu.json                  # a tiny CPU matrix
    python -m fastclr.bench.train --device cuda --precision bf16 --channels-last --compile off on \\
        --models resnet18 resnet34 resnet50 --json bench/results/train-gpu.json
    python -m fastclr.bench.train --device cuda ... --graphs off on --augment-devices gpu cpu \\
        --optimizers lars_timm lars

For each (shard set, model, variant) one model and optimiser are built with
`trainers.build_training` and driven by `trainers.train_step`, the pretrain
loop's own step (both views in one forward, NT-Xent, backward, LARS step, plus
the schedule's update), fed three ways in alternation, --repeats times:

  model        a few batches already on the device, cycled: the model's own speed
  dali         the DALI loader reading the shards (what `fastclr pretrain` uses)
  torchvision  the torchvision DataLoader baseline on the same shards and augmentations

Each measurement builds its loader fresh, runs --warmup steps (pipeline fill,
workers, compilation), then times --steps steps between two synchronisations;
data wait is the time spent blocked in `next(loader)`. Reported: medians of
images/s (one image = its two views), efficiency = dali / model, speedup =
dali / torchvision, data-wait fraction, peak GPU memory, and the epoch time
those speeds give on the shard set. Each row also gives the seconds of its
first step (compilation included) and of its first measurement's warm-up
(a CUDA graph's capture included), apart from the steady-state speeds.
Rows vary --compile (off, on = default mode, or a torch.compile mode),
--graphs (the whole step as one CUDA graph), --optimizers, --augment-devices
(where DALI's ops run; a choice that lands where another did is measured once),
--prefetch and --batch-size (each takes several values). On CUDA every timed step
runs under `torch.cuda.set_sync_debug_mode("error")` (--no-sync-check turns it
off): a step that made the host wait for the GPU fails the run instead of being
measured. On the CPU, `--graphs on` needs FASTCLR_CPU_GRAPHS=1 and runs the
graphed step without capture (`graph_captured: false`): `bash bench/gpu.sh
dry-run` rehearses the GPU rows so, and `--compile-backend aot_eager` traces a
compiled row as inductor would, without its minutes of code generation.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from fastclr.bench.convert import add_row, run_header, write_results
from fastclr.bench.pipeline import batches_forever, dataloader_workers
from fastclr.bench.shard_sets import make_shards
from fastclr.pipelines import TorchvisionLoader, augment_on, create_loader, open_shards, train_steps
from fastclr.trainers import (
    COMPILE_MODES,
    CPU_GRAPHS,
    INPUT_DTYPE,
    OPTIMIZERS,
    PretrainConfig,
    build_step,
    build_training,
    graphs_problem,
    new_accelerator,
)

MODES = ("model", "dali", "torchvision")
DATASETS = ("cifar10-raw", "cifar10-jpeg", "synthetic224-jpeg")


def pretrain_config(args: argparse.Namespace, model: str, size: int, batch_size: int, variant: dict):
    """The recipe being measured, as the trainer's own config (LARS, mlp_bn head, CIFAR stem at 32 px)."""
    compile_mode = variant["compile"]
    cfg = PretrainConfig(
        batch_size=batch_size,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=compile_mode != "off",
        compile_mode="default" if compile_mode in ("off", "on") else compile_mode,
        cuda_graphs=variant["graphs"] == "on",
        cpu=args.device == "cpu",
    )
    cfg.data.size, cfg.data.num_threads = size, args.dali_threads
    cfg.data.prefetch, cfg.data.augment_device = variant["prefetch"], variant["augment_device"]
    cfg.model.encoder, cfg.model.cifar_stem = model, size <= 64
    cfg.optim.name = variant["optimizer"]
    return cfg


@contextlib.contextmanager
def no_host_sync(check: bool):
    """With `check`, any CUDA sync torch makes inside raises: a step must never wait for the GPU."""
    if not check:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def timed_steps(step, batches, steps: int, warmup: int, cuda: bool, sync_check: bool = False) -> dict:
    """Run `warmup` untimed steps, then `steps` timed ones; the only syncs are at the window's ends."""
    warming = time.perf_counter()
    for _ in range(warmup):
        loss = step(next(batches))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_seconds = time.perf_counter() - warming
    images, wait = 0, 0.0
    started = time.perf_counter()
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - asked
        with no_host_sync(sync_check):
            loss = step(batch)
        images += batch[0].shape[0]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    final_loss = loss.item()  # after the window: a non-finite loss would void the figure
    if not math.isfinite(final_loss):
        raise RuntimeError(f"the loss became {final_loss} while benchmarking; the figures would be void")
    return {
        "images_per_s": images / seconds,
        "data_wait": wait / seconds,
        "seconds": seconds,
        "warmup_seconds": warmup_seconds,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def make_step(cfg: PretrainConfig, accelerator: Accelerator, channels: int):
    """(batch -> loss, timing): the pretrain loop's step (graphed if cfg.cuda_graphs) on a fresh model
    and optimiser, with the schedule's update; timing["first_step_seconds"] is set by the first call."""
    cfg.optim.warmup_epochs = 0  # a schedule longer than any bench: the rate stays near the base rate
    training = build_training(cfg, accelerator, channels, steps_per_epoch=10**6 // cfg.epochs)
    step = build_step(training)
    training.model.train()
    timing = {"first_step_seconds": None}

    def timed(batch):
        first = timing["first_step_seconds"] is None
        started = time.perf_counter()
        loss = step(*batch)  # the views and the labels, as the loop's step takes them
        if first:  # compilation happens here: reported apart from the steady state
            if accelerator.device.type == "cuda":
                torch.cuda.synchronize()
            timing["first_step_seconds"] = time.perf_counter() - started
        return loss

    return timed, timing


def measure_config(
    args, accelerator, data, size: int, model_name: str, batch_size: int, variant: dict
) -> dict:
    """One row: every mode --repeats times, alternating, on one model and optimiser; `data` is the
    opened shard set every loader of the run reads."""
    cuda = accelerator.device.type == "cuda"
    dtype = INPUT_DTYPE[args.precision] if cuda else torch.float32
    cfg = pretrain_config(args, model_name, size, batch_size, variant)
    folder = data.folder
    step, timing = make_step(cfg, accelerator, data.channels)
    common = dict(
        batch_size=batch_size,
        size=size,
        device=accelerator.device,
        dtype=dtype,
        channels_last=cfg.channels_last,
    )
    dali = dict(
        num_threads=cfg.data.num_threads, prefetch=cfg.data.prefetch, augment_device=cfg.data.augment_device
    )
    workers = dataloader_workers(args.workers, folder)  # a worker without a tar would have nothing to read
    makers = {
        "dali": lambda: create_loader("pretrain", data, **dali, **common),
        "torchvision": lambda: TorchvisionLoader("pretrain", data, num_workers=workers, **common),
    }
    first = create_loader("pretrain", data, **dali, **common)
    dali_threads, augment_device = first.num_threads, first.augment_device
    # (a) reads real augmented batches, made once, kept on the device and cycled
    # whole batches (views and labels): a graphed step's static inputs must be what DALI's batches are
    cached = [tuple(x.clone() for x in batch) for batch in itertools.islice(batches_forever(first), 4)]
    del first
    runs = {mode: [] for mode in args.modes}
    for _ in range(args.repeats):  # alternate, so machine noise hits every mode alike
        for mode in args.modes:
            loader = None if mode == "model" else makers[mode]()
            batches = itertools.cycle(cached) if loader is None else batches_forever(loader)
            runs[mode].append(
                timed_steps(step, batches, args.steps, args.warmup, cuda, args.sync_check and cuda)
            )
            del batches, loader
            gc.collect()
    del cached, step
    accelerator.free_memory()
    epoch_images = train_steps(data.num_samples, batch_size, 1) * batch_size
    first_mode = runs[args.modes[0]][0]
    row = {
        "dataset": folder.name,
        "size": size,
        "model": model_name,
        "batch_size": batch_size,
        "compile": cfg.compile,
        "compile_mode": cfg.compile_mode if cfg.compile else None,
        "compile_backend": (args.compile_backend or "inductor") if cfg.compile else None,
        "cuda_graphs": cfg.cuda_graphs,
        "graph_captured": cfg.cuda_graphs and cuda,  # false: the CPU rehearsal, no capture
        "optimizer": cfg.optim.name,
        "augment_device": augment_device,
        "dali_threads": dali_threads,
        "prefetch": cfg.data.prefetch,
        "first_step_seconds": round(timing["first_step_seconds"], 3),
        "first_warmup_seconds": round(first_mode["warmup_seconds"], 3),  # incl. a graph's capture
        "epoch_images": epoch_images,
        "workers": workers,
        "modes": {},
    }
    for mode, measured in runs.items():
        speed = round(statistics.median(m["images_per_s"] for m in measured), 2)  # derived figures use this
        memory = [m["peak_memory_gb"] for m in measured if m["peak_memory_gb"] is not None]
        row["modes"][mode] = {
            "images_per_s": speed,
            "data_wait": round(statistics.median(m["data_wait"] for m in measured), 4),
            "peak_memory_gb": round(max(memory), 2) if memory else None,
            "epoch_seconds": round(epoch_images / speed, 1),
            "runs": [round(m["images_per_s"], 2) for m in measured],
        }
    row.update(ratios(row["modes"]))
    return row


def variants(args: argparse.Namespace) -> list[dict]:
    """Every combination of the levers asked for, in the order given (the first is the baseline)."""
    levers = {
        "compile": args.compile,
        "graphs": args.graphs,
        "optimizer": args.optimizers,
        "augment_device": args.augment_devices,
        "prefetch": args.prefetch,
    }
    combos = [dict(zip(levers, values, strict=True)) for values in itertools.product(*levers.values())]
    return [  # a graph needs our LARS and no compile: other combinations are skipped, not failed
        v
        for v in combos
        if v["graphs"] == "off"
        or not graphs_problem(v["optimizer"], args.precision, 1, v["compile"] != "off")
    ]


def rows(args: argparse.Namespace, size: int, cuda: bool):
    """(model, batch size, variant) of each row at `size`; an augment device that lands where an
    earlier one did ("gpu" on the CPU is "cpu") is not measured twice."""
    measured = set()
    batch_sizes = args.batch_size if size <= 64 else args.batch_size_224
    for model_name, variant, batch_size in itertools.product(args.models, variants(args), batch_sizes):
        where = augment_on(variant["augment_device"], size, cuda)
        key = (model_name, batch_size, where, *(v for k, v in variant.items() if k != "augment_device"))
        if key not in measured:
            measured.add(key)
            yield model_name, batch_size, variant


def ratios(modes: dict) -> dict:
    """efficiency = DALI / model alone (1.0: the GPU never waits); speedup = DALI / DataLoader."""
    out = {}
    if "dali" in modes and "model" in modes:
        out["efficiency"] = round(modes["dali"]["images_per_s"] / modes["model"]["images_per_s"], 3)
    if "dali" in modes and "torchvision" in modes:
        out["speedup"] = round(modes["dali"]["images_per_s"] / modes["torchvision"]["images_per_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=".gpu-data/cifar10-jpeg.tar.gz", help="CIFAR-10 ImageFolder")
    parser.add_argument("--data", help="folder to keep the shards in between runs (default: temporary)")
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, default=["cifar10-raw", "synthetic224-jpeg"]
    )
    parser.add_argument("--synthetic", type=int, default=2048, help="number of 224 px images")
    parser.add_argument("--models", nargs="+", default=["resnet18"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=sorted(INPUT_DTYPE), default="fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--compile", nargs="+", choices=["off", "on", *COMPILE_MODES], default=["off"], help="on: default"
    )
    parser.add_argument("--graphs", nargs="+", choices=["off", "on"], default=["off"], help="CUDA graphs")
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=["lars"])
    parser.add_argument("--augment-devices", nargs="+", choices=["auto", "gpu", "cpu"], default=["auto"])
    parser.add_argument("--prefetch", type=int, nargs="+", default=[2], help="DALI's prefetch queue depth")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32], help="per step at 32 px")
    parser.add_argument("--batch-size-224", type=int, nargs="+", default=[8], help="per step at 224 px")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--dali-threads", type=int, help="default: 4 for GPU ops, the cores for CPU ops")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers")
    parser.add_argument("--torch-threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--sync-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on CUDA, fail if a timed step makes torch sync the host (set_sync_debug_mode('error'))",
    )
    parser.add_argument(
        "--compile-backend", help="torch.compile's backend (default inductor; aot_eager: tracing alone)"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    if "on" in args.graphs and args.device == "cpu" and os.environ.get(CPU_GRAPHS) != "1":
        parser.error(
            "--graphs on needs --device cuda (a CUDA graph captures GPU kernels); "
            f"{CPU_GRAPHS}=1 rehearses its buffers and copies on the CPU, without capture"
        )
    if args.compile_backend:  # build_training calls torch.compile(model, mode=...): the backend rides along
        torch.compile = functools.partial(torch.compile, backend=args.compile_backend)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)  # on CPU: leave the loader's threads a core of their own
    accelerator = new_accelerator(cpu=args.device == "cpu")
    cuda = accelerator.device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_shards(Path(args.src), Path(args.data or tmp), args.synthetic)
        results = {
            **run_header("train", cuda),
            "precision": args.precision,
            "channels_last": args.channels_last,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "host_sync_check": bool(cuda and args.sync_check),  # true: no timed step synced the host
            "rows": [],
        }
        for name in args.datasets:
            folder, size = folders[name]
            data = open_shards(folder)  # checked once: every loader of every row reads this
            for model_name, batch_size, variant in rows(args, size, cuda):
                row = measure_config(args, accelerator, data, size, model_name, batch_size, variant)
                add_row(results, row, args.json)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
