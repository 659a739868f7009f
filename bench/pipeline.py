"""Two-view images per second: the DALI loader against the torchvision DataLoader, side by side.

    python -m fastclr.bench.pipeline --json bench/results/pipeline-cpu.json            # CPU (DALI CPU ops)
    python -m fastclr.bench.pipeline --device cuda --json bench/results/pipeline-gpu.json

Datasets: CIFAR-10 train shards made from --src (the ImageFolder tarball), once
as the original JPEGs and once raw; and synthetic 224 px JPEGs. For each, both
loaders run the same SimCLR preset for --batches batches after --warmup, in
alternation, --repeats times; the table reports medians and their ratio.
--augment-devices gpu cpu measures DALI's graph once per place its operators
run (on a GPU run, "cpu" copies only the finished views to the device); the
DataLoader gets --workers workers, at most one per tar (a worker without a tar
has nothing to read, and the baseline refuses such a setting).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import nvidia.dali
import torch

from fastclr import shards
from fastclr.bench.convert import environment, unpack, write_results
from fastclr.pipelines import TorchvisionLoader, augment_on, create_loader, default_threads, open_shards


def dataloader_workers(requested: int, folder: Path, world_size: int = 1) -> int:
    """At most one DataLoader worker per tar of a rank's share: a worker without a tar has nothing to
    read, and the baseline refuses such a setting (gpu.sh asked 16 workers of 10 tars once)."""
    tars = len(shards.load_manifest(folder)["shards"])
    return max(1, min(requested, tars // world_size))


def make_shards(src: Path, data: Path, synthetic: int) -> dict[str, tuple[Path, int]]:
    """{name: (shard folder, image side)}; reuses folders already made in `data`."""
    made = {}
    if not (data / "cifar10-jpeg").is_dir() or not (data / "cifar10-raw").is_dir():
        train = unpack(src, data) / "train"
        for encoding, name in [("auto", "cifar10-jpeg"), ("raw", "cifar10-raw")]:
            source = shards.open_source("imagefolder", train, "train")
            shards.convert(
                source, data / name, encoding=encoding, workers=os.cpu_count(), overwrite=True, progress=False
            )
    made["cifar10-jpeg"] = (data / "cifar10-jpeg", 32)
    made["cifar10-raw"] = (data / "cifar10-raw", 32)
    synthetic_dir = data / "synthetic224-jpeg"
    if not synthetic_dir.is_dir() or shards.load_manifest(synthetic_dir)["num_samples"] != synthetic:
        source = shards.open_source("synthetic", None, "train", num=synthetic, size=224, classes=10)
        shards.convert(
            source,
            synthetic_dir,
            encoding="jpeg",
            quality=90,
            shard_size=max(1, synthetic // 16),
            workers=os.cpu_count(),
            overwrite=True,
            progress=False,
        )
    made["synthetic224-jpeg"] = (data / "synthetic224-jpeg", 224)
    return made


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
    parser.add_argument("--src", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--data", help="folder to keep the shards in between runs (default: temporary)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=2048, help="number of 224 px images")
    parser.add_argument("--only", nargs="+", help="datasets to run (default: all)")
    parser.add_argument(
        "--threads", type=int, help="DALI threads (default: 4 for GPU ops, the cores for CPU)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers, one per tar")
    parser.add_argument("--prefetch", type=int, default=2, help="DALI's prefetch queue depth")
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
            "command": " ".join(["python -m fastclr.bench.pipeline", *sys.argv[1:]]),
            **environment(),
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__,
            "dali": nvidia.dali.__version__,
            "batch_size": args.batch_size,
            "dtype": str(dtype),
            "prefetch": args.prefetch,
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
            for device in devices:
                makers = {
                    "dali": partial(
                        create_loader,
                        "pretrain",
                        opened,
                        num_threads=args.threads,
                        prefetch=args.prefetch,
                        augment_device=device,
                        **common,
                    ),
                    "torchvision": partial(
                        TorchvisionLoader, "pretrain", opened, num_workers=workers, **common
                    ),
                }
                # the DataLoader does not depend on where DALI's ops run: measured with the first only
                wanted = [k for k in args.loaders if k == "dali" or device == devices[0]]
                makers = {k: v for k, v in makers.items() if k in wanted}
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
                    "dali_threads": args.threads or default_threads(device == "gpu", cuda),
                    "workers": workers,
                    **{f"{k}_images_per_s": round(statistics.median(v)) for k, v in runs.items()},
                    "runs": {k: [round(x) for x in v] for k, v in runs.items()},
                }
                if len(runs) == 2:
                    row["dali_over_torchvision"] = round(
                        row["dali_images_per_s"] / row["torchvision_images_per_s"], 2
                    )
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
                if args.json:  # kept row by row: a run cut short by a timeout keeps what it measured
                    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    write_results(results, args.json)


if __name__ == "__main__":
    main()
