"""The shard sets the benchmarks read, made once in a folder and reused by every later run.

    python -m fastclr.bench.shard_sets --src .gpu-data/cifar10-jpeg.tar.gz --data /tmp/benchdata

From the CIFAR-10 ImageFolder (--src, an archive or a folder holding train/ and test/): the train
split as its JPEGs (`cifar10-jpeg`) and raw (`cifar10-raw`), the test split raw (`cifar10-test-raw`),
and --synthetic 224 px JPEGs (`synthetic224-jpeg`). A folder already made is kept (a conversion
writes its folder only once complete). Prints, and with --json writes, each set's images and
seconds and the cores the converter had: `bash bench/gpu.sh` makes them here, on the GPU host's
cores, before its first stage, so no stage spends its time converting. torch is not imported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fastclr import shards
from fastclr.bench.convert import environment, unpack, write_results


def _convert(source, folder: Path, made: dict, **options) -> None:
    started = time.perf_counter()
    manifest = shards.convert(
        source, folder, workers=os.cpu_count(), overwrite=True, progress=False, **options
    )
    made[folder.name] = {
        "images": manifest["num_samples"],
        "seconds": round(time.perf_counter() - started, 2),
    }


def make_shards(
    src: Path, data: Path, synthetic: int, made: dict | None = None
) -> dict[str, tuple[Path, int]]:
    """{name: (shard folder, image side)} of the train sets and the synthetic one, made when missing
    (`made` collects what was converted now)."""
    made = {} if made is None else made
    for encoding, name in [("auto", "cifar10-jpeg"), ("raw", "cifar10-raw")]:
        if not (data / name).is_dir():
            source = shards.open_source("imagefolder", unpack(src, data) / "train", "train")
            _convert(source, data / name, made, encoding=encoding)
    synthetic_dir = data / "synthetic224-jpeg"
    if not synthetic_dir.is_dir() or shards.load_manifest(synthetic_dir)["num_samples"] != synthetic:
        source = shards.open_source("synthetic", None, "train", num=synthetic, size=224, classes=10)
        _convert(source, synthetic_dir, made, encoding="jpeg", quality=90, shard_size=max(1, synthetic // 16))
    return {
        "cifar10-jpeg": (data / "cifar10-jpeg", 32),
        "cifar10-raw": (data / "cifar10-raw", 32),
        "synthetic224-jpeg": (synthetic_dir, 224),
    }


def cifar_shards(src: Path, data: Path, made: dict | None = None) -> tuple[Path, Path]:
    """CIFAR-10 train and test as raw shards (time to accuracy reads them), made when missing."""
    made = {} if made is None else made
    folders = {"train": data / "cifar10-raw", "test": data / "cifar10-test-raw"}
    for split, folder in folders.items():
        if not folder.is_dir():
            _convert(
                shards.open_source("imagefolder", unpack(src, data) / split, split),
                folder,
                made,
                encoding="raw",
            )
    return folders["train"], folders["test"]


def views_shards(src: Path, data: Path, synthetic: int) -> dict[str, tuple[Path, int]]:
    """{name: (shard folder, side)}: CIFAR-10's test JPEGs and synthetic 224 px JPEGs (bench.views)."""
    cifar, synth = data / "cifar10-test-jpeg", data / f"synthetic224-jpeg-{synthetic}"
    made = {}
    if not cifar.is_dir():
        _convert(
            shards.open_source("imagefolder", unpack(src, data) / "test", "train"),
            cifar,
            made,
            encoding="auto",
        )
    if not synth.is_dir():
        source = shards.open_source("synthetic", None, "train", num=synthetic, size=224, classes=10)
        _convert(source, synth, made, encoding="jpeg", quality=90, shard_size=max(1, synthetic // 8))
    return {"cifar10-test-jpeg": (cifar, 32), "synthetic224-jpeg": (synth, 224)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=".gpu-data/cifar10-jpeg.tar.gz", help="CIFAR-10 ImageFolder")
    parser.add_argument("--data", required=True, help="the folder that keeps the sets")
    parser.add_argument("--synthetic", type=int, default=2048, help="number of 224 px images")
    parser.add_argument("--json")
    args = parser.parse_args()
    started, made = time.perf_counter(), {}
    make_shards(Path(args.src), Path(args.data), args.synthetic, made)
    cifar_shards(Path(args.src), Path(args.data), made)
    results = {
        "benchmark": "shard sets",
        "command": " ".join(["python -m fastclr.bench.shard_sets", *sys.argv[1:]]),
        **environment(),
        "made": made,  # {} when every set was there already
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_results(results, args.json)


if __name__ == "__main__":
    main()
