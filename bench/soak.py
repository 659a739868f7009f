"""Soak: many short CPU pretrains on JPEG shards, each stopped and resumed once; counts the crashes.

    python -m fastclr.bench.soak --train shards/cifar10-train-5pct --runs 20 --json bench/results/soak.json

Each run is its own `fastclr pretrain` process (small CNN, 3 epochs, fp32, kNN monitor on --val when
given), stopped by `max_steps` part way and then run again to its end, as a user resumes. A process
killed by a signal (a segmentation fault is -11, shown by a shell as 139) is a crash; any other
non-zero exit is counted apart. JPEG matters: DALI's JPEG decoder threads read the environment, which
is how a race with environment writes crashed runs that raw or PNG shards never did.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastclr.bench.convert import environment, write_results


def pretrain_args(train: str, val: str | None, run_dir: Path, batch_size: int, *extra: str) -> list[str]:
    args = [
        "pretrain",
        f"data.train={train}",
        f"run_dir={run_dir}",
        f"batch_size={batch_size}",
        "model.encoder=small_cnn",
        "epochs=3",
        "cpu=true",
        "precision=fp32",
        "optim.warmup_epochs=0.3",
        "track.progress=false",
        *extra,
    ]
    if val:
        args += [f"data.knn_bank={train}", f"data.knn_val={val}"]
    return args


def one_run(entry: list[str], args: argparse.Namespace, run_dir: Path) -> dict:
    """Both halves of one run: the stopped start and the resume. Returns their exit codes."""
    result = {}
    for phase, extra in (("start", [f"max_steps={args.stop_at}"]), ("resume", [])):
        started = time.time()
        try:
            done = subprocess.run(
                [*entry, *pretrain_args(args.train, args.val, run_dir, args.batch_size, *extra)],
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            code, tail = done.returncode, (done.stdout + done.stderr)[-300:]
        except subprocess.TimeoutExpired:
            code, tail = "timeout", ""
        result[phase] = {"returncode": code, "seconds": round(time.time() - started, 1)}
        if code != 0:
            result[phase]["tail"] = tail
            break
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", required=True, help="JPEG shard folder to pretrain on")
    parser.add_argument(
        "--val", help="labelled shards for the kNN monitor (its loaders are built each epoch)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--stop-at", type=int, default=10, help="max_steps of each run's first half")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--timeout", type=int, default=600, help="seconds one process may take")
    parser.add_argument(
        "--entry",
        default=f"{sys.executable} -m fastclr",
        help="the command that runs fastclr (split on spaces)",
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in range(args.runs):
            run = one_run(args.entry.split(), args, Path(scratch) / f"run-{n}")
            runs.append(run)
            print(json.dumps({"run": n, **run}), flush=True)
    codes = [phase["returncode"] for run in runs for phase in run.values()]
    crashes = sum(1 for run in runs if any(_signalled(p["returncode"]) for p in run.values()))
    failures = sum(1 for run in runs if any(p["returncode"] != 0 for p in run.values())) - crashes
    results = {
        "bench": "soak",
        **environment(),
        "command": " ".join(sys.argv),
        "train": args.train,
        "val": args.val,
        "runs": args.runs,
        "crashed": crashes,
        "failed_otherwise": failures,
        "processes": len(codes),
        "details": runs,
    }
    print(json.dumps({k: v for k, v in results.items() if k != "details"}))
    write_results(results, args.json)
    if crashes or failures:
        sys.exit(1)


def _signalled(code) -> bool:
    return isinstance(code, int) and code < 0


if __name__ == "__main__":
    main()
