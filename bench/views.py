"""The cost of N views per decoded image against N/2 two-view passes (the decode and read are shared).

    python -m fastclr.bench.views --json bench/results/views-cpu.json                   # CPU (DALI CPU ops)
    python -m fastclr.bench.views --device cuda --json bench/results/views-gpu.json

For each shard set and each view set (`2`, `4`, `8`: N views at the set's side;
`2+6`: two views plus six small ones, 16 px beside 32, 96 px beside 224, as in
multi-crop), the DALI pretrain loader runs
--batches batches after --warmup; the view sets alternate, --repeats times.
Reported: medians of decoded images/s and views/s (wall clock) and of CPU
milliseconds per 1,000 views (the process's CPU time, all DALI threads), and
two ratios against the two-view loader: `speed` (views/s over its views/s) and
`cpu_saving` (its CPU ms per view over the set's). N/2 two-view passes make N
views at exactly the two-view rate, so a ratio above 1 is what one decode for N
views gains; 1 means the shared decode and read were free to begin with.
Shards: the 10,000 CIFAR-10 test JPEGs from --src (32 px), and synthetic 224 px
JPEGs (quality 90).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fastclr.bench.convert import run_header, write_results
from fastclr.bench.pipeline import batches_forever
from fastclr.bench.shard_sets import views_shards
from fastclr.pipelines import create_loader, open_shards

SMALL_SIDE = {32: 16, 224: 96}  # the small views' side beside each shard set's


def view_set(spec: str, size: int) -> dict:
    """'8' -> 8 views at `size`; '2+6' -> 2 views at `size` and 6 small ones (multi-crop)."""
    large, _, small = spec.partition("+")
    return {
        "views": int(large),
        "small_views": int(small or 0),
        "small_size": SMALL_SIDE[size] if small else None,
        "size": size,
    }


def measure(loader, batches: int, warmup: int, cuda: bool) -> tuple[float, float, float]:
    """(decoded images/s, views/s, CPU ms per 1,000 views) over `batches` batches after `warmup`."""
    stream = batches_forever(loader)
    for _ in itertools.islice(stream, warmup):
        pass
    if cuda:
        torch.cuda.synchronize()
    started, cpu_started, images, views = time.perf_counter(), time.process_time(), 0, 0
    for *made, label in itertools.islice(stream, batches):
        images += len(label)
        views += sum(len(v) for v in made)
    if cuda:
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return images / seconds, views / seconds, 1e6 * cpu / views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=".gpu-data/cifar10-jpeg.tar.gz")
    parser.add_argument("--data", help="folder to keep the shards in between runs (default: temporary)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sets", nargs="+", default=["2", "4", "8", "2+6"], help="view sets ('2' first)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch at 32 px")
    parser.add_argument("--batch-size-224", type=int, default=8, help="images per batch at 224 px")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=512, help="number of 224 px images")
    parser.add_argument("--only", nargs="+", help="shard sets to run (default: all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="DALI threads")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.sets[0] != "2":
        parser.error("--sets must start with 2: the two-view loader is what the others are compared to")
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        datasets = views_shards(Path(args.src), Path(args.data or tmp), args.synthetic)
        results = {
            **run_header("views", cuda),
            "dtype": str(dtype),
            "threads": args.threads,
            "rows": [],
        }
        for name, (folder, size) in datasets.items():
            if args.only and name not in args.only:
                continue
            batch_size = args.batch_size if size <= 64 else args.batch_size_224
            opened = open_shards(folder)  # checked once, not by each of the loaders made below
            runs = {s: [] for s in args.sets}
            for _ in range(args.repeats):  # alternate, so machine noise hits every set alike
                for spec in args.sets:
                    shape = view_set(spec, size)
                    loader = create_loader(
                        "pretrain",
                        opened,
                        batch_size=batch_size,
                        device=args.device,
                        dtype=dtype,
                        channels_last=cuda,
                        num_threads=args.threads,
                        small_crop_scale=(0.05, 0.4),
                        **shape,
                    )  # fresh each time: no idle threads of another one running
                    runs[spec].append(measure(loader, args.batches, args.warmup, cuda))
                    del loader
                    gc.collect()
            pair_rate = statistics.median(v for _, v, _ in runs["2"])
            pair_cost = statistics.median(c for _, _, c in runs["2"])
            for spec, measured in runs.items():
                rate = statistics.median(v for _, v, _ in measured)
                cost = statistics.median(c for _, _, c in measured)
                row = {
                    "dataset": name,
                    "size": size,
                    "batch_size": batch_size,
                    "set": spec,
                    **view_set(spec, size),
                    "images_per_s": round(statistics.median(i for i, _, _ in measured), 1),
                    "views_per_s": round(rate, 1),
                    "cpu_ms_per_1000_views": round(cost, 1),
                    "speed": round(rate / pair_rate, 2),
                    "cpu_saving": round(pair_cost / cost, 2),
                    "runs_cpu_ms_per_1000_views": [round(c, 1) for _, _, c in measured],
                    "runs_views_per_s": [round(v, 1) for _, v, _ in measured],
                }
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
