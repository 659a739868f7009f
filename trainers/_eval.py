"""Evaluate a frozen encoder: `linear` (a probe on cached features, or on augmented views) and `knn`.

Both read `encoder.safetensors` + `encoder.json` (a pretrain run directory, or the file with its JSON
beside it), extract features once with the val pipeline from the encoder in eval mode, and write
`results.json` (metrics, settings, the encoder's hash); the probe also writes confusion.png and
probe.safetensors. `linear` in `augmented` mode is `finetune` with the encoder frozen.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from fastclr import shards
from fastclr.config import check_settings
from fastclr.pipelines import create_loader
from fastclr.trainers._classify import _finetune
from fastclr.trainers._encoder_file import encoder_files, load_encoder
from fastclr.trainers._encoder_info import read_encoder_info
from fastclr.trainers._errors import EvalError
from fastclr.trainers._eval_config import FinetuneConfig, KnnConfig, LinearConfig
from fastclr.trainers._eval_io import (
    accuracy_report,
    check_inputs,
    device_for,
    same_classes,
    save_weights,
    tracker,
    write_results,
)
from fastclr.trainers._knn import extract_features, is_main_process, knn_predict
from fastclr.trainers._linear import fit_linear_probe
from fastclr.trainers._lock import writes_out


def features_of(encoder, info: dict, folder: str | Path, batch_size: int, device: torch.device):
    """(features, labels, manifest) of every sample in `folder`, through the val pipeline."""
    loader = create_loader(
        "val",
        folder,
        batch_size=batch_size,
        size=info["image_size"],
        device=device,
        channels=info["in_chans"],
    )
    if not loader.manifest["labeled"]:
        raise EvalError(f"{folder}: unlabelled shards cannot be evaluated; use a labelled split")
    features, labels = extract_features(encoder.to(device), loader, desc=f"features of {folder}")
    return features, labels, loader.manifest


def labelled_pair(
    encoder_path, train, val, batch_size: int, device: torch.device, trust_unhashed: bool = False
):
    """The frozen encoder's info, (features, labels) of `train` and of `val`, and their class names."""
    encoder, info = load_encoder(encoder_path, trust_unhashed)
    train_x, train_y, train_manifest = features_of(encoder, info, train, batch_size, device)
    val_x, val_y, val_manifest = features_of(encoder, info, val, batch_size, device)
    return info, (train_x, train_y), (val_x, val_y), same_classes(train_manifest, val_manifest, train, val)


@writes_out("knn")
def knn(cfg: KnnConfig) -> dict:
    """kNN top-1 of the encoder (weighted or majority vote); returns results.json's content."""
    check_settings(cfg)
    started = time.time()
    check_inputs(cfg.encoder, cfg.train, cfg.val)
    info, (bank, bank_labels), (queries, labels), classes = labelled_pair(
        cfg.encoder, cfg.train, cfg.val, cfg.batch_size, device_for(cfg.cpu), cfg.trust_unhashed
    )
    k = min(cfg.k, len(bank_labels))
    if k < cfg.k and is_main_process():  # a vote of more neighbours than the bank holds
        print(f"note: k {cfg.k} is more than the {len(bank_labels)} images of {cfg.train}; voted with k {k}")
    predicted = knn_predict(bank, bank_labels, queries, len(classes), k, cfg.temperature, vote=cfg.vote)
    return write_results(
        Path(cfg.out),
        {
            "protocol": "knn",
            "top1": (predicted == labels).float().mean().item(),
            "k": k,
            "k_requested": cfg.k,
            "vote": cfg.vote,
            "temperature": cfg.temperature if cfg.vote == "weighted" else None,
            "encoder": str(cfg.encoder),
            "encoder_sha256": info["sha256"],
            "train": str(cfg.train),
            "val": str(cfg.val),
            "train_samples": len(bank_labels),
            "val_samples": len(labels),
            "seconds": time.time() - started,
        },
        tracker(cfg.out, cfg.wandb, cfg.tensorboard),
    )


@writes_out("linear")
def linear(cfg: LinearConfig) -> dict:
    """A `linear` or `mlp2` probe of a frozen encoder: top-1, top-5, per-class accuracy, confusion.

    `label_fraction` trains on a stratified, seeded subset of `train`, kept in `out/train-<fraction>`.
    """
    check_settings(cfg)
    check_inputs(cfg.encoder, cfg.train, cfg.val)  # before making a subset
    read_encoder_info(encoder_files(cfg.encoder)[1], cfg.trust_unhashed, say=lambda _: None)
    train = cfg.train
    if cfg.label_fraction is not None:
        train = Path(cfg.out) / f"train-{cfg.label_fraction:g}"
        command = ["fastclr", *sys.argv[1:]]  # recorded in the subset's manifest
        shards.subset(
            cfg.train, train, fraction=cfg.label_fraction, seed=cfg.seed, overwrite=True, command=command
        )
    if cfg.mode == "augmented":  # the classic protocol: a frozen encoder, a head trained on augmented views
        head_only = FinetuneConfig(
            encoder=cfg.encoder,
            train=str(train),
            val=cfg.val,
            out=cfg.out,
            mode="head",
            head=cfg.head,
            lr_head=cfg.learning_rate(),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
            preset=cfg.preset,
            seed=cfg.seed,
            trust_unhashed=cfg.trust_unhashed,
            cpu=cfg.cpu,
            wandb=cfg.wandb,
            tensorboard=cfg.tensorboard,
        )
        check_settings(head_only)
        return _finetune(head_only)  # not finetune(), which would lock the --out this run holds
    return _cached_probe(cfg, train)


def _cached_probe(cfg: LinearConfig, train) -> dict:
    started = time.time()
    info, (train_x, train_y), (val_x, val_y), classes = labelled_pair(
        cfg.encoder, train, cfg.val, cfg.batch_size, device_for(cfg.cpu), cfg.trust_unhashed
    )
    probe = fit_linear_probe(
        train_x,
        train_y,
        len(classes),
        cfg.epochs,
        cfg.learning_rate(),
        cfg.weight_decay,
        cfg.seed,
        head=cfg.head,
        show_progress=True,
    )
    with torch.no_grad():
        top5 = probe(val_x).topk(min(5, len(classes)), dim=1).indices
    out = Path(cfg.out)
    report = accuracy_report(top5, val_y, classes, out)
    save_weights(probe, out / "probe.safetensors")
    return write_results(
        out,
        {
            "protocol": f"{cfg.head} probe (cached features)",
            **report,
            "settings": {
                "epochs": cfg.epochs,
                "lr": cfg.learning_rate(),
                "weight_decay": cfg.weight_decay,
                "seed": cfg.seed,
                "head": cfg.head,
                "label_fraction": cfg.label_fraction,
            },
            "encoder": str(cfg.encoder),
            "encoder_sha256": info["sha256"],
            "train": str(train),
            "val": str(cfg.val),
            "train_samples": len(train_y),
            "val_samples": len(val_y),
            "seconds": time.time() - started,
        },
        tracker(cfg.out, cfg.wandb, cfg.tensorboard),
    )
