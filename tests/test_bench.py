"""The benchmarks run for a few steps on tiny data, so they cannot rot (figures: BENCHMARKS.md)."""

import json
import subprocess
import sys

from datasets import write_imagefolder


def run_bench(*args):
    result = subprocess.run(
        [sys.executable, "-m", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_convert_and_pipeline_benchmarks_write_their_json(tmp_path):
    for split in ("train", "test"):
        write_imagefolder(tmp_path / "src" / "cifar10" / split, per_class=12, size=32)
    run_bench("bench.convert", "--src", tmp_path / "src", "--repeats", 1, "--json", tmp_path / "convert.json")
    convert = json.loads((tmp_path / "convert.json").read_text())
    assert convert["speed"][0]["images"] == 72 and {r["encoding"] for r in convert["size"]} == {
        "jpeg (kept)",
        "png",
        "raw",
    }
    run_bench(
        "bench.pipeline",
        "--src",
        tmp_path / "src",
        "--data",
        tmp_path / "data",
        "--batch-size",
        4,
        "--batches",
        2,
        "--warmup",
        1,
        "--repeats",
        1,
        "--synthetic",
        32,
        "--threads",
        1,
        "--json",
        tmp_path / "pipeline.json",
    )
    pipeline = json.loads((tmp_path / "pipeline.json").read_text())
    assert [r["dataset"] for r in pipeline["rows"]] == ["cifar10-jpeg", "cifar10-raw", "synthetic224-jpeg"]
    assert all(r["dali_images_per_s"] > 0 and r["torchvision_images_per_s"] > 0 for r in pipeline["rows"])
    table = run_bench("bench.table", tmp_path / "convert.json", tmp_path / "pipeline.json").stdout
    assert "| 1 |" in table and "synthetic224-jpeg" in table
