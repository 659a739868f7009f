"""`fastclr demo`: SimCLR on scikit-learn's digits, on the CPU, against a supervised baseline.

1. digits -> shards in a cache folder (train 1,437 / test 360 images), and a
   stratified 10% of the train labels;
2. SimCLR pretraining of the small CNN on all train images (no labels);
3. a linear probe on the frozen encoder, trained on the 10% labels;
4. the same small CNN trained from scratch on the same 10% labels;
5. both evaluated on the test split.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastclr import shards
from fastclr.pipelines import create_loader
from fastclr.trainers import (
    PretrainConfig,
    SupervisedConfig,
    extract_features,
    fit_linear_probe,
    load_encoder,
    pretrain,
    probe_accuracy,
    supervised,
)

SIZE = 16  # digits are 8x8: views are drawn at 16 px so crops and rotations keep detail


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastclr" / "digits"


def digit_shards(folder: Path) -> dict[str, Path]:
    """train / test / train-10pct shard folders, made once."""
    paths = {name: folder / name for name in ("train", "test", "train-10pct")}
    for split in ("train", "test"):
        if not (paths[split] / shards.MANIFEST).is_file():
            source = shards.open_source("digits", None, split)
            shards.convert(source, paths[split], encoding="raw", shard_size=500, overwrite=True)
    if not (paths["train-10pct"] / shards.MANIFEST).is_file():
        shards.subset(paths["train"], paths["train-10pct"], fraction=0.1, seed=0, overwrite=True)
    return paths


def demo_config(paths: dict[str, Path], run_dir: Path, epochs: int) -> PretrainConfig:
    """The recipe of launch/configs/a1_mnist_6k_labels.yaml: small CNN, projection 128 -> 64 -> 32,
    Adam 1e-3, temperature 0.5."""
    cfg = PretrainConfig(
        run_dir=str(run_dir),
        epochs=epochs,
        batch_size=256,
        temperature=0.5,
        precision="fp32",
        cpu=True,
        keep_checkpoints=1,
        checkpoint_every=max(1, epochs // 4),
        knn_k=20,
        knn_every=10,
    )
    cfg.data.train, cfg.data.knn_bank, cfg.data.knn_val = map(
        str, (paths["train"], paths["train-10pct"], paths["test"])
    )
    cfg.data.size, cfg.data.preset, cfg.data.num_threads = SIZE, "digits", 2
    cfg.model.encoder, cfg.model.head, cfg.model.hidden_dim, cfg.model.out_dim = "small_cnn", "mlp_bn", 64, 32
    cfg.optim.name, cfg.optim.lr, cfg.optim.lr_scaling = "adam", 1e-3, "none"
    # warm-up ends inside short demos too (epochs below warm-up are refused elsewhere)
    cfg.optim.weight_decay, cfg.optim.warmup_epochs = 1e-5, min(5, epochs / 10)
    cfg.track.log_every = 10  # progress on: a bar per epoch and a line with its loss and kNN accuracy
    return cfg


STAGES = 4


def stage(n: int, text: str) -> None:
    print(f"[{n}/{STAGES}] {text}", flush=True)


def val_loader(folder: Path):
    return create_loader("val", folder, batch_size=256, size=SIZE, num_threads=2)


def baseline_config(paths: dict[str, Path], out: Path, epochs: int, seed: int) -> SupervisedConfig:
    """The small CNN from scratch on the probe's labels: AdamW 1e-3, weight decay 5e-4, cosine per step,
    batch 32, the pretraining's digit augmentations."""
    return SupervisedConfig(
        model="small_cnn",
        size=SIZE,
        train=str(paths["train-10pct"]),
        val=str(paths["test"]),
        out=str(out),
        optimizer="adamw",
        lr=1e-3,
        weight_decay=5e-4,
        epochs=epochs,
        batch_size=32,
        preset="digits",
        seed=seed,
        cpu=True,
    )


def supervised_baseline(paths: dict[str, Path], run_dir: Path, epochs: int, seeds: int) -> list[float]:
    """Test top-1 of `fastclr supervised` runs of the baseline, one a seed, in run_dir/supervised-<seed>."""
    return [
        supervised(baseline_config(paths, run_dir / f"supervised-{seed}", epochs, seed))["top1"]
        for seed in range(seeds)
    ]


def run_demo(run_dir: Path, epochs: int = 150, supervised_epochs: int = 100, seeds: int = 3) -> dict:
    """Everything above; returns both accuracies (mean over `seeds` probe and baseline seeds) and the run."""
    started = time.time()
    stage(1, f"scikit-learn digits as shards in {cache_dir()} (made once)")
    paths = digit_shards(cache_dir())
    cfg = demo_config(paths, run_dir, epochs)
    stage(2, f"SimCLR pretraining of a small CNN on 1,437 unlabelled digits, {epochs} epochs, in {run_dir}")
    summary = pretrain(cfg)

    stage(3, f"linear probes on the frozen encoder, trained on 10% of the labels ({seeds} seeds)")
    encoder, _ = load_encoder(summary["encoder"])
    train_x, train_y = extract_features(
        encoder, val_loader(paths["train-10pct"]), desc="features, labelled 10%"
    )
    test_x, test_y = extract_features(encoder, val_loader(paths["test"]), desc="features, test")
    # one test image is 0.28 points: single runs are too noisy to rank
    probe = [
        probe_accuracy(fit_linear_probe(train_x, train_y, num_classes=10, seed=seed), test_x, test_y)
        for seed in range(seeds)
    ]
    stage(4, f"the same CNN trained from scratch on the same labels ({seeds} seeds)")
    baseline = supervised_baseline(paths, run_dir, supervised_epochs, seeds)
    return {
        "simclr_linear_probe": sum(probe) / seeds,
        "supervised": sum(baseline) / seeds,
        "runs": {"simclr_linear_probe": probe, "supervised": baseline},
        "labels": len(train_y),
        "test_images": len(test_y),
        "run_dir": str(run_dir),
        "seconds": time.time() - started,
        "epochs": epochs,
    }


def format_table(result: dict) -> str:
    rows = [
        ("SimCLR small CNN + linear probe", "simclr_linear_probe"),
        ("supervised small CNN, same labels", "supervised"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"fastclr demo: scikit-learn digits, {result['labels']} labels (10%), {result['test_images']} test "
        f"images, {result['seconds']:.0f} s on the CPU",
        f"  {'method'.ljust(width)}  test accuracy (mean of {len(result['runs']['supervised'])} seeds)",
    ]
    for name, key in rows:
        seeds = ", ".join(f"{r:.1%}" for r in result["runs"][key])
        lines.append(f"  {name.ljust(width)}  {result[key]:.1%}  ({seeds})")
    lines.append(
        f"run directory: {result['run_dir']} (config.yaml, metrics.jsonl, checkpoints/, encoder.safetensors; "
        "supervised-<seed>/ for the baseline)"
    )
    return "\n".join(lines + NEXT_STEPS)


# The same three steps on your own images: a folder per class (root/<class>/<image>).
NEXT_STEPS = [
    "",
    "next, on your own images (one folder per class: photos/<class>/<image>.jpg):",
    "  fastclr shards convert imagefolder --src photos/train --out shards/train",
    "  fastclr shards convert imagefolder --src photos/val --out shards/val",
    "  fastclr pretrain data.train=shards/train data.size=64 model.encoder=resnet18 epochs=100 "
    "run_dir=runs/mine",
    "  fastclr linear --encoder runs/mine --train shards/train --val shards/val --out runs/mine/linear",
    "(without a GPU they run on the CPU in float32; see `fastclr pretrain --help`, launch/configs/)",
]
