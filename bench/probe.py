"""What the online linear probe costs: pretraining images per second with it off and on.

    python -m fastclr.bench.probe --json bench/results/probe-cpu.json
    python -m fastclr.bench.probe --device cuda --size 32 --batch-size 512 --steps 60 --json probe-gpu.json

`fastclr pretrain` on synthetic labelled shards, --repeats runs with the probe
off and on, alternating (so both see the same load on shared machines), each
from scratch for --steps steps logging every --log-every: a run's figure is the
median images/s of its logged windows after the first (start-up); a mode's is
its best run (on a shared machine the other jobs only ever slow a run down), with
the median beside it. The ratio of the best runs, on/off, is the probe's cost.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from fastclr import shards, trainers
from fastclr.bench.convert import run_header, write_results


def run_once(data: Path, run_dir: Path, args, probe: bool) -> float:
    cfg = trainers.PretrainConfig(
        run_dir=str(run_dir),
        epochs=1_000,
        max_steps=args.steps,
        batch_size=args.batch_size,
        precision="bf16" if args.device == "cuda" else "fp32",
        cpu=args.device == "cpu",
        online_probe=probe,
    )
    cfg.data.train, cfg.data.size, cfg.data.num_threads = str(data), args.size, args.threads
    cfg.model.encoder, cfg.model.cifar_stem = args.encoder, True
    cfg.optim.name, cfg.optim.warmup_epochs = "lars", 0
    cfg.track.log_every, cfg.track.progress = args.log_every, False
    trainers.pretrain(cfg)
    records = trainers.read_metrics(run_dir / "metrics.jsonl")
    speeds = [r["images_per_s"] for r in records if "images_per_s" in r][1:]
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet18", help="with the CIFAR stem")
    parser.add_argument("--size", type=int, default=16, help="image side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="DALI threads")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (shared cores)")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    runs = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        images = args.batch_size * args.steps
        source = shards.open_source(
            "synthetic", None, "train", num=images, size=args.size, classes=10, seed=0
        )
        shards.convert(source, data, shard_size=max(images // 4, 1), progress=False)
        for repeat in range(args.repeats):
            for mode in ("off", "on"):
                runs[mode].append(
                    round(run_once(data, Path(tmp) / f"{mode}-{repeat}", args, mode == "on"), 1)
                )
    off, on = max(runs["off"]), max(runs["on"])
    write_results(
        {
            "benchmark": "online probe cost",
            **run_header("probe", args.device == "cuda"),
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "probe_off": {
                "runs": runs["off"],
                "images_per_s": off,
                "median": round(statistics.median(runs["off"]), 1),
            },
            "probe_on": {
                "runs": runs["on"],
                "images_per_s": on,
                "median": round(statistics.median(runs["on"]), 1),
            },
            "ratio_on_off": round(on / off, 3),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
