"""Time to the first step: how long `fastclr pretrain` takes from its start to its first logged step.

    python -m fastclr.bench.startup --train shards/cifar10-train --val shards/cifar10-test --json out.json

Each repeat is a fresh process (`--entry`, default this Python's `-m fastclr`) running a one-step
pretrain with the kNN monitor configured, timed from the process start to its first metrics line,
then to its exit. What it measures is the set-up: imports, opening and checking the shard folders,
building the model and the loader, the first batch. Give several `--entry` commands (e.g. an older
checkout's) to compare them in one run: the repeats alternate between them, so machine noise hits
each alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastclr.bench.convert import environment, write_results


def first_step_seconds(entry: list[str], args: argparse.Namespace, run_dir: Path) -> dict:
    command = [
        *entry,
        "pretrain",
        f"data.train={args.train}",
        f"run_dir={run_dir}",
        f"model.encoder={args.model}",
        f"batch_size={args.batch_size}",
        "epochs=1",
        "max_steps=1",
        "cpu=true",
        "precision=fp32",
        "optim.warmup_epochs=0",
        "track.log_every=1",
        "track.progress=false",
    ]
    if args.val:
        command += [f"data.knn_bank={args.val}", f"data.knn_val={args.val}"]
    metrics = run_dir / "metrics.jsonl"
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = None
    while proc.poll() is None:
        if first is None and metrics.is_file() and metrics.read_text().strip():
            first = time.perf_counter() - started
        time.sleep(0.01)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout.read()[-2000:]}")
    return {"first_step_seconds": first if first is not None else total, "process_seconds": total}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", required=True, help="shard folder to pretrain on")
    parser.add_argument("--val", help="labelled shards the kNN monitor would read (opened at start)")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--entry",
        action="append",
        help="a command that runs fastclr (split on spaces; repeat to compare); default: this Python's "
        "-m fastclr",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    entries = args.entry or [f"{sys.executable} -m fastclr"]
    runs = {entry: [] for entry in entries}
    with tempfile.TemporaryDirectory() as scratch:
        for n in range(args.repeats):
            for k, entry in enumerate(entries):
                runs[entry].append(first_step_seconds(entry.split(), args, Path(scratch) / f"run-{n}-{k}"))
    rows = [
        {
            "entry": entry,
            "first_step_seconds": statistics.median(r["first_step_seconds"] for r in timed),
            "process_seconds": statistics.median(r["process_seconds"] for r in timed),
            "runs": timed,
        }
        for entry, timed in runs.items()
    ]
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}))
    write_results(
        {
            "bench": "startup",
            **environment(),
            "command": " ".join(["python -m fastclr.bench.startup", *sys.argv[1:]]),
            "train": args.train,
            "val": args.val,
            "rows": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
