"""Classifiers trained end to end, and measured again later: `finetune`, `supervised`, `evaluate`.

`finetune`: the encoder of a pretrain run + a new head, either head-only (the encoder frozen, in eval
mode) or full (separate learning rates for backbone and head). `supervised`: any timm model from
scratch or from a local weights file, with Mixup/CutMix and label smoothing through timm
(launch/configs/c2_* to c6_*). Both train on the train pipeline (random resized crop and flip)
through one loop (`trainers._fit`), measure on the val pipeline every epoch, and leave in `out`:
metrics.jsonl, results.json, confusion.png and the classifier (model.safetensors + model.json),
which `evaluate` measures on other shards of the same classes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fastclr import shards
from fastclr.config import check_settings
from fastclr.encoders import build_classifier
from fastclr.pipelines import create_loader, open_shards
from fastclr.trainers._classifier_file import load_classifier, save_classifier
from fastclr.trainers._encoder_file import load_encoder
from fastclr.trainers._errors import EvalError
from fastclr.trainers._eval_config import EvaluateConfig, FinetuneConfig, SupervisedConfig
from fastclr.trainers._eval_io import (
    check_inputs,
    class_difference,
    final_report,
    same_channels,
    write_results,
)
from fastclr.trainers._fit import (
    create_classifier_optimizer,
    create_classifier_schedule,
    create_mixer,
    fit_classifier,
)
from fastclr.trainers._linear import make_head
from fastclr.trainers._lock import writes_out
from fastclr.trainers._tracking import MetricsLog, eval_accelerator, new_accelerator

if TYPE_CHECKING:
    from timm.data import Mixup


@writes_out("finetune")
def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune a pretrained encoder with a new head; returns (and writes) results.json's content."""
    check_settings(cfg)
    return _finetune(cfg)


def _finetune(cfg: FinetuneConfig) -> dict:
    check_inputs(cfg.encoder, cfg.train, cfg.val)
    torch.manual_seed(cfg.seed)
    encoder, info = load_encoder(cfg.encoder, cfg.trust_unhashed)

    def build(num_classes: int) -> _Classifier:
        head = make_head(cfg.head, info["num_features"], num_classes)
        groups = [{"params": list(head.parameters()), "lr": cfg.lr_head}]
        if cfg.mode == "full":
            encoder.requires_grad_(True)
            groups.append({"params": list(encoder.parameters()), "lr": cfg.lr_backbone})
        return _Classifier(
            nn.Sequential(encoder, head),
            groups,
            {"kind": "finetune", "encoder": info, "head": cfg.head},
            frozen=encoder if cfg.mode == "head" else None,
        )

    return _train(
        cfg,
        info["image_size"],
        info["in_chans"],
        build,
        first={"protocol": f"finetune ({cfg.mode}, {cfg.head} head)"},
        last=lambda model: {
            "settings": _settings(cfg),
            "encoder": str(cfg.encoder),
            "encoder_sha256": info["sha256"],
        },
    )


@writes_out("supervised")
def supervised(cfg: SupervisedConfig) -> dict:
    """A timm model trained on labels only (the supervised baselines); returns results.json's content."""
    check_settings(cfg)
    check_inputs(None, cfg.train, cfg.val)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # timm's Mixup/CutMix draw from numpy's global generator
    channels = shards.load_manifest(cfg.train)["image"]["channels"]  # the loader checks the shards

    def build(num_classes: int) -> _Classifier:
        model = build_classifier(
            cfg.model,
            num_classes,
            cifar_stem=cfg.cifar_stem,
            pretrained_file=cfg.pretrained_file,
            in_chans=channels,
            img_size=cfg.size,
        )
        return _Classifier(
            model,
            [{"params": list(model.parameters()), "lr": cfg.lr}],
            {"kind": "supervised", "model": cfg.model, "cifar_stem": cfg.cifar_stem},
            mixer=create_mixer(cfg.mixup, cfg.cutmix, cfg.label_smoothing, num_classes),
            label_smoothing=cfg.label_smoothing,
        )

    return _train(
        cfg,
        cfg.size,
        channels,
        build,
        first={"protocol": "supervised", "model": cfg.model},
        last=lambda model: {
            "parameters": sum(p.numel() for p in model.parameters()),
            "settings": _settings(cfg),
        },
    )


@dataclasses.dataclass
class _Classifier:
    """What `finetune` and `supervised` hand the shared part: the network and how it trains."""

    model: nn.Module
    groups: list[dict]  # parameter groups, each with its learning rate
    description: dict  # model.json, less what the data decides (classes, size, channels)
    frozen: nn.Module | None = None  # kept in eval mode
    mixer: Mixup | None = None
    label_smoothing: float = 0.0


def _settings(cfg) -> dict:
    """How the classifier was trained: the settings but its inputs and outputs (recorded beside)."""
    inputs_and_outputs = ("encoder", "model", "train", "val", "out", "cpu", "wandb", "tensorboard")
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in inputs_and_outputs}


def _train(
    cfg: FinetuneConfig | SupervisedConfig,
    size: int,
    channels: int,
    build: Callable[[int], _Classifier],
    first: dict,
    last: Callable[[nn.Module], dict],
) -> dict:
    """What finetune and supervised share: trackers, loaders, the loop, the saved classifier, results.json
    (`first` and `last` go before and after the accuracies and the history)."""
    started, out = time.time(), Path(cfg.out)
    accelerator = eval_accelerator(
        out, out.name, dataclasses.asdict(cfg), cfg.wandb, cfg.tensorboard, cfg.cpu
    )
    train_loader, val_loader, classes = _loaders(cfg, size, channels, accelerator)
    net = build(len(classes))
    out.mkdir(parents=True, exist_ok=True)
    optimizer = create_classifier_optimizer(cfg.optimizer, net.groups, cfg.weight_decay)
    model, optimizer = accelerator.prepare(net.model, optimizer)
    schedule = create_classifier_schedule(optimizer, cfg.epochs, len(train_loader), cfg.decay_epochs)
    history = fit_classifier(
        model,
        optimizer,
        schedule,
        train_loader,
        val_loader,
        cfg.epochs,
        accelerator,
        mixer=net.mixer,
        label_smoothing=net.label_smoothing,
        frozen=net.frozen,
        log=MetricsLog(out / "metrics.jsonl", accelerator.is_main_process),
    )
    if accelerator.is_main_process:
        description = {**net.description, "classes": classes, "size": size, "in_chans": channels}
        save_classifier(accelerator.unwrap_model(model), out, description)  # no DDP `module.` prefix
    results = {
        **first,
        **final_report(model, val_loader, accelerator, classes, out),
        "history": history,
        **last(model),
        "train": str(cfg.train),
        "val": str(cfg.val),
        "seconds": time.time() - started,
    }
    return write_results(out, results, accelerator)


def _loaders(cfg, size: int, channels: int, accelerator) -> tuple:
    """The train loader (cfg.preset's augmentations), the val loader, and their class names."""
    common = dict(
        batch_size=cfg.batch_size,
        size=size,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
        channels=channels,
        seed=cfg.seed,
    )
    val = create_loader("val", cfg.val, **common)  # first: an empty val set is named before batch sizes
    return create_loader("train", cfg.train, preset=cfg.preset, **common), val, val.manifest["classes"]


@writes_out("evaluate")
def evaluate(cfg: EvaluateConfig) -> dict:
    """Top-1 of a saved classifier on labelled shards whose classes must be the ones it was trained on."""
    check_settings(cfg)
    started = time.time()
    manifest = check_inputs(None, None, cfg.val)["val"]
    model, description = load_classifier(cfg.model)
    if manifest["classes"] != description["classes"]:
        difference = class_difference(description["classes"], manifest["classes"], cfg.model, cfg.val)
        raise EvalError(
            f"{cfg.model}: its head predicts other classes than {cfg.val} holds ({difference}); "
            "evaluate on shards of the dataset it was trained on, or fine-tune a new head"
        )
    same_channels(description["in_chans"], manifest, f"the classifier {cfg.model}", cfg.val)
    val = open_shards(cfg.val)  # checked once, read by the loader below
    accelerator = new_accelerator(cpu=cfg.cpu)
    loader = create_loader(
        "val",
        val,
        batch_size=cfg.batch_size,
        size=description["size"],
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
        channels=description["in_chans"],
    )
    model, out = accelerator.prepare(model), Path(cfg.out)
    return write_results(
        out,
        {
            "protocol": f"evaluate ({description['kind']})",
            **final_report(model, loader, accelerator, description["classes"], out),
            "model": str(cfg.model),
            "val": str(cfg.val),
            "seconds": time.time() - started,
        },
    )
