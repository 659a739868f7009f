"""Classifiers trained end to end: fine-tuning a pretrained encoder, and supervised baselines.

`finetune`: the encoder of a pretrain run + a new head, either head-only (the
encoder frozen, in eval mode) or full (separate learning rates for backbone and
head). `supervised`: any timm model from scratch or from a local weights file,
with Mixup/CutMix and label smoothing through timm (EXPERIMENTS.md C2, C3, C5, C6).
Both read the train pipeline (random resized crop and flip) and measure on the
val pipeline, with the class count and normalisation of the target shards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from fastclr.encoders import build_classifier, build_encoder
from fastclr.pipelines import create_loader, shard_source
from fastclr.progress import progress
from fastclr.trainers._encoder_file import load_encoder
from fastclr.trainers._errors import EvalError
from fastclr.trainers._eval import (
    check_inputs,
    check_out,
    plot_confusion,
    same_classes,
    save_weights,
    write_results,
)
from fastclr.trainers._knn import gather_uneven
from fastclr.trainers._linear import make_head
from fastclr.trainers._lock import holds_folder
from fastclr.trainers._tracking import MetricsLog, autocast_context, eval_accelerator, new_accelerator


@torch.no_grad()
def top1(model: nn.Module, loader, accelerator: Accelerator) -> float:
    """Top-1 over every sample of every rank's share of the val loader (each sample counted once)."""
    model.eval()
    counts = torch.zeros(2, device=accelerator.device)
    for images, labels in loader:
        counts += torch.stack([(model(images).argmax(1) == labels).sum(), torch.tensor(len(labels))]).to(
            counts
        )
    correct, total = accelerator.reduce(counts, reduction="sum").tolist()
    return correct / total


@torch.no_grad()
def final_report(model: nn.Module, loader, accelerator: Accelerator, classes: list[str], out: Path) -> dict:
    """Top-1, top-5 and per-class accuracy over every rank's val share, and confusion.png in `out`."""
    from sklearn.metrics import confusion_matrix

    model.eval()
    top5, labels = [], []
    for images, label in loader:
        top5.append(model(images).topk(min(5, len(classes)), dim=1).indices)
        labels.append(label)
    top5, labels = gather_uneven(torch.cat(top5)), gather_uneven(torch.cat(labels))
    matrix = confusion_matrix(
        labels.cpu().numpy(), top5[:, 0].cpu().numpy(), labels=list(range(len(classes)))
    )
    if accelerator.is_main_process:
        plot_confusion(matrix, classes, out / "confusion.png")
    return {
        "top1": float(matrix.trace() / matrix.sum()),
        "top5": (top5 == labels[:, None]).any(1).float().mean().item(),
        "per_class": dict(
            zip(classes, (matrix.diagonal() / matrix.sum(1).clip(min=1)).tolist(), strict=True)
        ),
    }


def fit(
    model: nn.Module,
    param_groups: list[dict],
    train_loader,
    val_loader,
    epochs: int,
    num_classes: int,
    accelerator: Accelerator,
    log: MetricsLog,
    weight_decay: float = 5e-4,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    label_smoothing: float = 0.0,
    frozen: nn.Module | None = None,
    decay_epochs: list[int] | None = None,
) -> list[dict]:
    """SGD (momentum 0.9, nesterov) with cosine decay, or x0.1 at each of `decay_epochs`;
    Mixup/CutMix through timm; val top-1 per epoch."""
    optimizer = torch.optim.SGD(param_groups, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    steps = len(train_loader)
    if decay_epochs:
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [e * steps for e in decay_epochs], 0.1)
    else:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * steps))
    mixer = (
        Mixup(
            mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes
        )
        if mixup or cutmix
        else None
    )
    soft = SoftTargetCrossEntropy()
    autocast = autocast_context(accelerator.device.type, "fp32")  # evaluations train in float32
    history = []
    bar = progress(range(epochs), "epochs", unit="epoch", enabled=accelerator.is_main_process)
    for epoch in bar:
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch starts at (the first group's)
        model.train()
        if frozen is not None:
            frozen.eval()  # a frozen backbone keeps its BN statistics
        loss_sum = torch.zeros((), device=accelerator.device)
        for images, labels in train_loader:
            with autocast():
                if mixer is not None and len(labels) % 2 == 0:
                    images, targets = mixer(images, labels)
                    loss = soft(model(images), targets)
                else:
                    loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
        record = {
            "step": epoch + 1,
            "epoch": epoch,
            "lr": lr,
            "train_loss": (loss_sum / len(train_loader)).item(),
            "val_top1": top1(model, val_loader, accelerator),
        }
        log.write(record)
        accelerator.log(record, step=epoch + 1)
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_top1=f"{record['val_top1']:.2%}")
    return history


def _loaders(
    train,
    val,
    size: int,
    batch_size: int,
    accelerator: Accelerator,
    channels: int | None,
    preset: str,
    seed: int,
):
    common = dict(
        batch_size=batch_size,
        size=size,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
        channels=channels,
        seed=seed,
    )
    _, train_manifest = shard_source(train)
    _, val_manifest = shard_source(val)
    same_classes(train_manifest, val_manifest, train, val)
    return (
        create_loader("train", train, preset=preset, **common),
        create_loader("val", val, **common),
        val_manifest,
    )


@holds_folder("out", check=check_out)
def finetune(
    encoder_path,
    train,
    val,
    out,
    mode: str = "full",
    head: str = "linear",
    epochs: int = 30,
    lr_head: float = 0.1,
    lr_backbone: float = 0.01,
    batch_size: int = 128,
    preset: str = "basic",
    weight_decay: float = 5e-4,
    decay_epochs: list[int] | None = None,
    seed: int = 0,
    cpu: bool = False,
    wandb: bool = False,
    tensorboard: bool = False,
) -> dict:
    """Fine-tune a pretrained encoder with a new head; mode `head` freezes the encoder, `full` trains all."""
    if mode not in ("head", "full"):
        raise EvalError(f"unknown fine-tune mode {mode!r}; choose head or full")
    check_inputs(out, encoder_path, train, val)
    started, out = time.time(), Path(out)
    torch.manual_seed(seed)
    config = {
        "encoder": str(encoder_path),
        "mode": mode,
        "head": head,
        "epochs": epochs,
        "lr_head": lr_head,
        "lr_backbone": lr_backbone,
        "decay_epochs": decay_epochs,
        "train": str(train),
        "val": str(val),
    }
    accelerator = eval_accelerator(out, out.name, config, wandb, tensorboard, cpu)
    encoder, info = load_encoder(encoder_path)
    train_loader, val_loader, manifest = _loaders(
        train, val, info["image_size"], batch_size, accelerator, info["in_chans"], preset, seed
    )
    classifier = make_head(head, info["num_features"], manifest["num_classes"])
    groups = [{"params": list(classifier.parameters()), "lr": lr_head}]
    if mode == "full":
        encoder.requires_grad_(True)
        groups.append({"params": list(encoder.parameters()), "lr": lr_backbone})
    model = nn.Sequential(encoder, classifier)
    out.mkdir(parents=True, exist_ok=True)
    history = fit(
        model,
        groups,
        train_loader,
        val_loader,
        epochs,
        manifest["num_classes"],
        accelerator,
        MetricsLog(out / "metrics.jsonl", accelerator.is_main_process),
        weight_decay,
        frozen=encoder if mode == "head" else None,
        decay_epochs=decay_epochs,
    )
    if accelerator.is_main_process:
        save_classifier(
            model,
            out,
            {
                "kind": "finetune",
                "encoder": info,
                "head": head,
                "classes": manifest["classes"],
                "size": info["image_size"],
                "in_chans": info["in_chans"],
            },
        )
    return write_results(
        out,
        {
            "protocol": f"finetune ({mode}, {head} head)",
            **final_report(model, val_loader, accelerator, manifest["classes"], out),
            "history": history,
            "settings": {
                "epochs": epochs,
                "lr_head": lr_head,
                "lr_backbone": lr_backbone,
                "batch_size": batch_size,
                "preset": preset,
                "weight_decay": weight_decay,
                "seed": seed,
            },
            "encoder": str(encoder_path),
            "encoder_sha256": info["sha256"],
            "train": str(train),
            "val": str(val),
            "seconds": time.time() - started,
        },
        accelerator,
    )


@holds_folder("out", check=check_out)
def supervised(
    model_name: str,
    train,
    val,
    out,
    size: int,
    epochs: int = 30,
    lr: float = 0.1,
    batch_size: int = 128,
    cifar_stem: bool = False,
    pretrained_file: str | None = None,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    label_smoothing: float = 0.0,
    preset: str = "basic",
    weight_decay: float = 5e-4,
    decay_epochs: list[int] | None = None,
    seed: int = 0,
    cpu: bool = False,
    wandb: bool = False,
    tensorboard: bool = False,
) -> dict:
    """A timm model trained on labels only: the supervised baselines."""
    check_inputs(out, None, train, val)
    started, out = time.time(), Path(out)
    torch.manual_seed(seed)
    config = {
        "model": model_name,
        "epochs": epochs,
        "lr": lr,
        "mixup": mixup,
        "cutmix": cutmix,
        "label_smoothing": label_smoothing,
        "decay_epochs": decay_epochs,
        "train": str(train),
        "val": str(val),
    }
    accelerator = eval_accelerator(out, out.name, config, wandb, tensorboard, cpu)
    _, manifest = shard_source(train)
    channels = manifest["image"]["channels"]
    train_loader, val_loader, manifest = _loaders(
        train, val, size, batch_size, accelerator, channels, preset, seed
    )
    model = build_classifier(
        model_name,
        manifest["num_classes"],
        cifar_stem=cifar_stem,
        pretrained_file=pretrained_file,
        in_chans=channels,
        img_size=size,
    )
    out.mkdir(parents=True, exist_ok=True)
    history = fit(
        model,
        [{"params": list(model.parameters()), "lr": lr}],
        train_loader,
        val_loader,
        epochs,
        manifest["num_classes"],
        accelerator,
        MetricsLog(out / "metrics.jsonl", accelerator.is_main_process),
        weight_decay,
        mixup,
        cutmix,
        label_smoothing,
        decay_epochs=decay_epochs,
    )
    if accelerator.is_main_process:
        save_classifier(
            model,
            out,
            {
                "kind": "supervised",
                "model": model_name,
                "cifar_stem": cifar_stem,
                "classes": manifest["classes"],
                "size": size,
                "in_chans": channels,
            },
        )
    return write_results(
        out,
        {
            "protocol": "supervised",
            "model": model_name,
            **final_report(model, val_loader, accelerator, manifest["classes"], out),
            "history": history,
            "parameters": sum(p.numel() for p in model.parameters()),
            "settings": {
                "epochs": epochs,
                "lr": lr,
                "batch_size": batch_size,
                "size": size,
                "cifar_stem": cifar_stem,
                "pretrained_file": pretrained_file,
                "mixup": mixup,
                "cutmix": cutmix,
                "label_smoothing": label_smoothing,
                "preset": preset,
                "seed": seed,
            },
            "train": str(train),
            "val": str(val),
            "seconds": time.time() - started,
        },
        accelerator,
    )


def save_classifier(model: nn.Module, out: Path, description: dict) -> None:
    """model.safetensors and model.json: what `evaluate` needs to rebuild the classifier."""
    save_weights(model, out / "model.safetensors")
    (out / "model.json").write_text(json.dumps(description, indent=1) + "\n")


def load_classifier(folder: str | Path) -> tuple[nn.Module, dict]:
    """The classifier a `finetune` or `supervised` run saved in `folder`, in eval mode."""
    folder = Path(folder)
    if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
        raise EvalError(
            f"{folder}: no model.json and model.safetensors; pass the --out folder of "
            "`fastclr finetune` or `fastclr supervised`"
        )
    description = json.loads((folder / "model.json").read_text())
    classes = len(description["classes"])
    if description["kind"] == "finetune":
        info = description["encoder"]
        encoder = build_encoder(info["encoder"], info["cifar_stem"], in_chans=info["in_chans"])
        model = nn.Sequential(encoder, make_head(description["head"], info["num_features"], classes))
    else:
        model = build_classifier(
            description["model"],
            classes,
            cifar_stem=description["cifar_stem"],
            in_chans=description["in_chans"],
            img_size=description["size"],
        )
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), description


def evaluate(model_dir, val, out, batch_size: int = 256, cpu: bool = False) -> dict:
    """Top-1 of a saved classifier on labelled shards whose classes must be the ones it was trained on."""
    started = time.time()
    check_inputs(out, None, None, val)
    model, description = load_classifier(model_dir)
    _, manifest = shard_source(val)
    if manifest["classes"] != description["classes"]:
        raise EvalError(
            f"{model_dir}: its head predicts {len(description['classes'])} classes, {val} has "
            f"{manifest['num_classes']} (or other names); evaluate on shards of the dataset it "
            "was trained on, or fine-tune a new head"
        )
    accelerator = new_accelerator(cpu=cpu)
    loader = create_loader(
        "val",
        val,
        batch_size=batch_size,
        size=description["size"],
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
        channels=description["in_chans"],
    )
    model = accelerator.prepare(model)
    return write_results(
        Path(out),
        {
            "protocol": f"evaluate ({description['kind']})",
            **final_report(model, loader, accelerator, description["classes"], Path(out)),
            "model": str(model_dir),
            "val": str(val),
            "seconds": time.time() - started,
        },
    )
