"""Two-view images per second: the DALI loader against the torchvision DataLoader, side by side.

    python -m fastclr.bench.pipeline --json bench/results/pipeline-cpu.json            # CPU (DALI CPU ops)
    python -m fastclr.bench.pipeline --device cuda --json bench/results/pipeline-gpu.json

Datasets: CIFAR-10 train shards made from --src (the ImageFolder tarball), once
as the original JPEGs and once raw; and synthetic 224 px JPEGs. For each, both
loaders run the same SimCLR preset for --batches batches after --warmup, in
alternation, --repeats times; the table reports medians and their ratio.
--augment-devices gpu cpu measures DALI's graph once per place its operators
run (on a GPU run, "cpu" copies only the finished views to the device), and
--threads and --prefetch take several values (one DALI row each); the
DataLoader gets --workers workers, at most one per tar (a worker without a tar
has nothing to read, and the baseline refuses such a setting), and is measured
beside the first DALI row of each shard set only.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from fastclr import shards
from fastclr.bench.convert import add_row, run_header, write_results
from fastclr.bench.shard_sets import make_shards
from fastclr.pipelines import TorchvisionLoader, augment_on, create_loader, default_threads, open_shards


def dataloader_workers(requested: int, folder: Path, world_size: int = 1) -> int:
    """At most one DataLoader worker per tar of a rank's share: a worker without a tar has nothing to
    read, and the baseline refuses such a setting (gpu.sh asked 16 workers of 10 tars once)."""
    tars = len(shards.load_manifest(folder)["shards"])
    return max(1, min(requested, tars // world_size))


def batches_forever(loader):
    while True:
        yield from loader


def measure(loader, batches: int, warmup: int, cuda: bool) -> float:
    """Two-view images per second over `batches` batches, after `warmup` (pipeline fill, workers)."""
    stream = batches_forever(loader)
    for _ in itertools.islice(stream, warmup):
        pass
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    images = 0
    for batch in itertools.islice(stream, batches):
        images += len(batch[-1])
    if cuda:
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=".gpu-data/cifar10-jpeg.tar.gz")
    parser.add_argument("--data", help="folder to keep the shards in between runs (default: temporary)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=2048, help="number of 224 px images")
    parser.add_argument("--only", nargs="+", help="datasets to run (default: all)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[None], help="DALI threads (default: default_threads)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers, one per tar")
    parser.add_argument("--prefetch", type=int, nargs="+", default=[2], help="DALI's prefetch queue depth")
    parser.add_argument(
        "--augment-devices", nargs="+", choices=["auto", "gpu", "cpu"], default=["auto"], help="DALI ops on"
    )
    parser.add_argument(
        "--loaders", nargs="+", choices=["dali", "torchvision"], default=["dali", "torchvision"]
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data or tmp)
        datasets = make_shards(Path(args.src), data, args.synthetic)
        results = {
            **run_header("pipeline", cuda),
            "batch_size": args.batch_size,
            "dtype": str(dtype),
            "rows": [],
        }
        for name, (folder, size) in datasets.items():
            if args.only and name not in args.only:
                continue
            opened = open_shards(folder)  # checked once, not by each of the loaders made below
            common = dict(
                batch_size=args.batch_size, size=size, device=args.device, dtype=dtype, channels_last=cuda
            )
            workers = dataloader_workers(args.workers, folder)
            devices = list(dict.fromkeys(augment_on(d, size, cuda) for d in args.augment_devices))
            for number, (device, threads, prefetch) in enumerate(
                itertools.product(devices, args.threads, args.prefetch)
            ):
                makers = {
                    "dali": partial(
                        create_loader,
                        "pretrain",
                        opened,
                        num_threads=threads,
                        prefetch=prefetch,
                        augment_device=device,
                        **common,
                    ),
                    "torchvision": partial(
                        TorchvisionLoader, "pretrain", opened, num_workers=workers, **common
                    ),
                }
                # the DataLoader depends on none of DALI's settings: measured beside the first row only
                makers = {
                    k: v for k, v in makers.items() if k in args.loaders and (k == "dali" or not number)
                }
                runs = {key: [] for key in makers}
                for _ in range(args.repeats):  # alternate, so machine noise hits both alike
                    for key, make in makers.items():
                        loader = make()  # fresh each time: no idle threads or workers of the other one
                        runs[key].append(measure(loader, args.batches, args.warmup, cuda))
                        del loader
                        gc.collect()
                row = {
                    "dataset": name,
                    "size": size,
                    "augment_device": device,
                    "dali_threads": threads or default_threads(device == "gpu", cuda),
                    "prefetch": prefetch,
                    "workers": workers,
                    **{f"{k}_images_per_s": round(statistics.median(v)) for k, v in runs.items()},
                    "runs": {k: [round(x) for x in v] for k, v in runs.items()},
                }
                if len(runs) == 2:
                    row["dali_over_torchvision"] = round(
                        row["dali_images_per_s"] / row["torchvision_images_per_s"], 2
                    )
                add_row(results, row, args.json)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
