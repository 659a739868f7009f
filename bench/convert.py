"""Shard conversion speed and size on disk, on an ImageFolder of JPEGs (CIFAR-10 by default).

    python -m fastclr.bench.convert --src cifar10-jpeg.tar.gz --json bench/results/convert.json

Converts every split folder under the source (train and test: all 60,000 CIFAR-10
images) with 1 and with 2 workers (byte-for-byte JPEG, the default), then once per
encoding (png, raw) to measure size on disk. Each timing is the best of --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from fastclr import shards

PROJECT = Path(__file__).resolve().parents[1]


def project_commit() -> str | None:
    """The commit of this project's tree: $FASTCLR_COMMIT (bench/gpu.sh sets it from the file written
    when packing), else git, but only when the project root is itself the repository's top. A copy
    without .git (the GPU machine's) would otherwise report the commit of whatever repository holds it.
    """
    if os.environ.get("FASTCLR_COMMIT"):
        return os.environ["FASTCLR_COMMIT"]
    git = ["git", "-C", str(PROJECT), "rev-parse", "--show-toplevel", "--short", "HEAD"]
    found = subprocess.run(git, capture_output=True, text=True).stdout.split()
    if len(found) != 2 or Path(found[0]).resolve() != PROJECT:
        return None
    dirty = subprocess.run(["git", "-C", str(PROJECT), "diff", "--quiet", "HEAD"]).returncode != 0
    return found[1] + ("-dirty" if dirty else "")


def environment() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": project_commit(),
    }


def run_header(module: str, cuda: bool) -> dict:
    """What a benchmark's results open with: the command that made them (`fastclr.bench.MODULE` and
    this process's arguments), the machine, the device, and the torch and DALI versions."""
    import nvidia.dali
    import torch

    return {
        "command": " ".join([f"python -m fastclr.bench.{module}", *sys.argv[1:]]),
        **environment(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "dali": nvidia.dali.__version__,
    }


def parse_timing_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """PARSER's arguments with those every timing loop takes (--warmup, --repeats, --threads, --json);
    --threads is applied before anything is timed."""
    import torch

    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # on shared cores, spinning threads can cost 20x
    return args


def add_row(results: dict, row: dict, path: str | None) -> None:
    """Append ROW to results["rows"] and print it; save the results so far to PATH when given, so
    that a run cut short by a timeout keeps what it measured."""
    results["rows"].append(row)
    print(json.dumps(row), flush=True)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=1) + "\n")


def write_results(results: dict, path: str | None) -> None:
    """Print the results as JSON, and save them to `path` when given."""
    text = json.dumps(results, indent=1)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def unpack(src: Path, work: Path) -> Path:
    """The ImageFolder root holding one folder per split (train/, test/), from a folder or an archive."""
    root = src
    if not src.is_dir():
        root = work / "src"
        if not (work / "src.unpacked").is_file():  # the marker of a finished extraction: reused
            with tarfile.open(src) as tar:
                tar.extractall(root, filter="data")  # "data": no paths outside work/src
            (work / "src.unpacked").write_text(f"{src}\n")
    top = [p for p in root.iterdir() if p.is_dir()]
    return top[0] if len(top) == 1 else root  # cifar10/{train,test}


def convert_all(root: Path, out: Path, encoding: str, workers: int) -> tuple[float, int, int]:
    """Convert every split under root; returns (seconds, images, bytes on disk)."""
    started = time.perf_counter()
    images = size = 0
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        split = "test" if split_dir.name in ("test", "val") else "train"
        source = shards.open_source("imagefolder", split_dir, split)
        target = out / split_dir.name
        manifest = shards.convert(
            source, target, encoding=encoding, workers=workers, overwrite=True, progress=False
        )
        images += manifest["num_samples"]
        size += sum(p.stat().st_size for p in target.iterdir())
    return time.perf_counter() - started, images, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=".gpu-data/cifar10-jpeg.tar.gz")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        root = unpack(Path(args.src), work)
        source_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        results = {
            "command": " ".join(["python -m fastclr.bench.convert", *sys.argv[1:]]),
            "source": str(args.src),
            "source_bytes": source_bytes,
            **environment(),
            "speed": [],
            "size": [],
        }
        for repeat in range(args.repeats):  # alternate worker counts so drift hits both alike
            for workers in args.workers:
                seconds, images, size = convert_all(root, work / "out", "auto", workers)
                results["speed"].append(
                    {
                        "workers": workers,
                        "repeat": repeat,
                        "seconds": round(seconds, 2),
                        "images": images,
                        "images_per_s": round(images / seconds),
                    }
                )
        for encoding in ["auto", "png", "raw"]:
            seconds, images, size = convert_all(root, work / "out", encoding, max(args.workers))
            results["size"].append(
                {
                    "encoding": "jpeg (kept)" if encoding == "auto" else encoding,
                    "bytes": size,
                    "MiB": round(size / 2**20, 1),
                    "bytes_per_image": round(size / images),
                    "workers": max(args.workers),
                    "images_per_s": round(images / seconds),
                }
            )
    best = {w: max(r["images_per_s"] for r in results["speed"] if r["workers"] == w) for w in args.workers}
    results["best_images_per_s"] = best
    write_results(results, args.json)


if __name__ == "__main__":
    main()
