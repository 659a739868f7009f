"""kNN and linear-probe accuracy against training wall-clock time, pretraining in chunks that resume.

    python -m fastclr.bench.time_to_accuracy --config launch/configs/simclr_cifar10_resnet18.yaml \\
        --run-dir runs/tta-r18 --chunk-epochs 10 --json bench/results/tta-gpu.json --plot tta.png

The run is the config's, with its full schedule (`epochs`), on CIFAR-10 train
shards (raw bytes: no decoding) made from --src; `key=value` overrides follow the
config, as for `fastclr pretrain`. The trainer's own kNN monitor is off
(`data.knn_bank=null`) so that training seconds are training alone. Each chunk raises `max_steps` by
--chunk-epochs worth of steps and calls the trainer, which resumes from the
run's last checkpoint and stops there with a new one; the encoder of that
checkpoint is then evaluated on the CIFAR-10 test split, from one extraction of
features: kNN both ways (weighted, k=--knn-k, T 0.1: ours; majority, k=10: the
protocol of simclr-cifar10.py) and a linear probe on cached features, all fitted
on the train split. Training
seconds count only the trainer calls (start-up and checkpoints included;
evaluations excluded). The curve is kept in RUN_DIR/time_to_accuracy.json, so
running the same command again continues it (e.g. in the next call of a GPU
machine lent for a few minutes at a time), until the schedule ends or
--budget-seconds of training are spent.

The JSON names the device, torch and DALI versions, commit and command, and
holds, apart from the measured curve, a projection to --project-epochs (the
1000-epoch schedule that no device session fits): error = a * epochs^-b fitted
in log-log to the measured points, labelled as a projection and never mixed
into the curve.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from fastclr import shards, trainers
from fastclr.bench.convert import run_header, write_results
from fastclr.bench.shard_sets import cifar_shards
from fastclr.launch import load_pretrain
from fastclr.pipelines import train_steps

CURVE = "time_to_accuracy.json"
ACCURACIES = ("knn", "knn_k10_majority", "linear")  # the curve's columns (knn: weighted, k=--knn-k)
TARGETS = (("linear", 0.86), ("knn", 0.90), ("knn_k10_majority", 0.90))  # our targets, on one H100/H200


def evaluate(encoder: Path, train: Path, test: Path, args, device: str) -> dict:
    """kNN (both votes) and linear-probe top-1 of the encoder on the test split, fitted on train; the
    features are extracted once."""
    started = time.perf_counter()
    _, (bank, bank_labels), (queries, labels), classes = trainers.labelled_pair(
        encoder, train, test, args.eval_batch_size, torch.device(device)
    )

    def top1(predicted: torch.Tensor) -> float:
        return (predicted == labels).float().mean().item()

    weighted = trainers.knn_predict(bank, bank_labels, queries, len(classes), args.knn_k, 0.1)
    majority = trainers.knn_predict(
        bank, bank_labels, queries, len(classes), trainers.ANCHOR_K, vote="majority"
    )
    probe = trainers.fit_linear_probe(bank, bank_labels, len(classes), epochs=args.probe_epochs)
    with torch.no_grad():
        linear = probe(queries).argmax(1)
    return {
        "knn": top1(weighted),
        "knn_k10_majority": top1(majority),
        "linear": top1(linear),
        "eval_seconds": round(time.perf_counter() - started, 1),
    }


def reached(curve: list[dict]) -> dict:
    """The first measured point at or above each target: training seconds and epoch (None: not yet)."""
    found = {}
    for key, threshold in TARGETS:
        point = next((p for p in curve if p.get(key) is not None and p[key] >= threshold), None)
        found[f"{key} >= {threshold:.0%}"] = (
            None if point is None else {"train_seconds": point["train_seconds"], "epoch": point["epoch"]}
        )
    return found


def project(curve: list[dict], epochs: float) -> dict | None:
    """A projection of each accuracy to `epochs`, from the measured curve: error = a * epochs^-b, fitted
    by least squares in log-log (at least 3 points, all before `epochs`); None when the curve cannot
    support one. Training seconds scale with epochs at the curve's last measured rate."""
    points = [p for p in curve if p["epoch"] > 0]
    if len(points) < 3 or points[-1]["epoch"] >= epochs:
        return None
    projection = {
        "label": f"projection to {epochs:g} epochs, not measured",
        "method": "error = a * epochs^-b, least squares on log(epochs), log(1 - top-1) of measured points",
        "caveat": "the measured points follow their own schedule (a shorter cosine decays sooner), so this "
        "extrapolates that curve's trend; a run of the longer schedule is the measurement",
        "epochs": epochs,
        "from_epochs": [p["epoch"] for p in points],
        "train_seconds": round(points[-1]["train_seconds"] / points[-1]["epoch"] * epochs, 1),
    }
    for key in ACCURACIES:
        pairs = [(p["epoch"], p[key]) for p in points if p.get(key) is not None and 0 < p[key] < 1]
        if len(pairs) < 3:
            continue
        x, err = np.log([e for e, _ in pairs]), np.log([1 - a for _, a in pairs])
        slope, intercept = np.polyfit(x, err, 1)
        projection[key] = round(float(1 - np.exp(intercept + slope * np.log(epochs))), 4)
        projection[f"{key}_fit"] = {"a": round(float(np.exp(intercept)), 4), "b": round(float(-slope), 4)}
    return projection


def plot(curve: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p["train_seconds"] / 60 for p in curve]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(minutes, [100 * p["linear"] for p in curve], "o-", label="linear probe")
    axes.plot(minutes, [100 * p["knn"] for p in curve], "s--", label="kNN (k=200, weighted)")
    if all("knn_k10_majority" in p for p in curve):
        axes.plot(minutes, [100 * p["knn_k10_majority"] for p in curve], "^:", label="kNN (k=10, majority)")
    axes.set_xlabel("training wall-clock (minutes)")
    axes.set_ylabel("test top-1 (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="pretrain or experiment YAML (launch/configs/...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="after the config, as in pretrain")
    parser.add_argument("--src", default=".gpu-data/cifar10-jpeg.tar.gz", help="CIFAR-10 ImageFolder")
    parser.add_argument("--data", help="folder to keep the shards in between runs (default: temporary)")
    parser.add_argument("--run-dir", required=True, help="the run; its curve file makes reruns continue")
    parser.add_argument("--chunk-epochs", type=float, default=10.0, help="training between evaluations")
    parser.add_argument(
        "--budget-seconds", type=float, help="start no chunk once this much training is spent"
    )
    parser.add_argument("--knn-k", type=int, default=200)
    parser.add_argument("--probe-epochs", type=int, default=300, help="full-batch Adam epochs of the probe")
    parser.add_argument("--eval-batch-size", type=int, default=512)
    parser.add_argument(
        "--project-epochs", type=float, default=1000, help="epochs of the labelled projection (0: none)"
    )
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--plot", help="PNG of the curve")
    args = parser.parse_intermixed_args()  # overrides may come before and after the options
    with tempfile.TemporaryDirectory() as tmp:
        train, test = cifar_shards(Path(args.src), Path(args.data or tmp))
        fixed = [f"data.train={train}", f"run_dir={args.run_dir}", "data.knn_bank=null", "data.knn_val=null"]
        cfg = load_pretrain(args.config, ["track.progress=false", *fixed, *args.overrides])
        resolved = OmegaConf.to_yaml(OmegaConf.structured(cfg))  # before max_steps changes below
        run_dir = Path(cfg.run_dir)
        curve_file = run_dir / CURVE
        curve = json.loads(curve_file.read_text())["curve"] if curve_file.is_file() else []
        steps_per_epoch = (
            train_steps(shards.load_manifest(train)["num_samples"], cfg.batch_size, 1) // cfg.grad_accum
        )
        total = cfg.epochs * steps_per_epoch
        device = "cuda" if torch.cuda.is_available() and not cfg.cpu else "cpu"
        spent = curve[-1]["train_seconds"] if curve else 0.0
        step = curve[-1]["global_step"] if curve else 0
        while step < total and (args.budget_seconds is None or spent < args.budget_seconds):
            target = min(total, step + max(1, math.ceil(args.chunk_epochs * steps_per_epoch)))
            cfg.max_steps = target  # the trainer resumes from the run's checkpoint and stops here with one
            started = time.perf_counter()
            summary = trainers.pretrain(cfg)
            spent += time.perf_counter() - started
            step = summary["global_step"]
            encoder = trainers.export_checkpoint_encoder(cfg, run_dir / "tta" / f"step-{step:08d}")
            point = {
                "global_step": step,
                "epoch": round(step / steps_per_epoch, 2),
                "train_seconds": round(spent, 1),
                **evaluate(encoder, train, test, args, device),
            }
            curve.append(point)
            curve_file.write_text(json.dumps({"curve": curve}, indent=1) + "\n")
            print(json.dumps(point), flush=True)
        results = {
            **run_header("time_to_accuracy", device == "cuda"),
            "config": args.config,
            "overrides": args.overrides,
            "resolved_config": resolved,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total,
            "finished": step >= total,
            "reached": reached(curve),
            "curve": curve,  # measured points only
            "projection": project(curve, args.project_epochs) if args.project_epochs else None,
        }
    if args.plot and curve:
        plot(curve, Path(args.plot), f"{cfg.model.encoder}, batch {cfg.batch_size}, {results['device']}")
    write_results(results, args.json)


if __name__ == "__main__":
    main()
