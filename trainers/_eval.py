"""Evaluate a pretrained encoder: linear probe on cached features and weighted kNN.

Both read `encoder.safetensors` + `encoder.json` (a pretrain run directory, or
the file with its JSON beside it), extract features once with the val
pipeline from a frozen encoder in eval mode, and write `results.json` (metrics,
settings, the encoder's hash) and, for the probe, a confusion matrix PNG.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from fastclr import shards
from fastclr.pipelines import create_loader
from fastclr.trainers._checkpoint import write_safetensors
from fastclr.trainers._encoder_file import encoder_files, load_encoder
from fastclr.trainers._errors import EvalError
from fastclr.trainers._knn import extract_features, knn_predict
from fastclr.trainers._linear import fit_linear_probe
from fastclr.trainers._tracking import eval_accelerator


def check_inputs(out, encoder=None, train=None, val=None) -> dict[str, dict]:
    """What an evaluation reads and writes, checked in a blink before any model is built or any
    feature extracted: the encoder's files, labelled shard folders sharing one class list, and an
    --out that can be a folder. Returns the manifests by role (`train`, `val`)."""
    if encoder is not None:
        encoder_files(encoder)
    manifests = {}
    for role, folder in (("train", train), ("val", val)):
        if folder is not None:
            manifests[role] = shards.load_manifest(folder)
            if not manifests[role]["labeled"]:
                raise EvalError(f"{folder}: unlabelled shards cannot be evaluated; use a labelled split")
    if len(manifests) == 2:
        same_classes(manifests["train"], manifests["val"], train, val)
    check_out(out)
    return manifests


def check_out(out) -> None:
    """--out can be made a folder and written in (EvalError otherwise)."""
    out = Path(out)
    existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise EvalError(f"--out {out}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK):
        raise EvalError(f"--out {out}: cannot write in {existing} (permission denied); choose another --out")


def _features(encoder, info: dict, folder: str | Path, batch_size: int, device: torch.device):
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


def labelled_pair(encoder_path, train, val, batch_size: int, device: torch.device):
    """The frozen encoder's info, (features, labels) of `train` and of `val`, and their class names."""
    encoder, info = load_encoder(encoder_path)
    train_x, train_y, train_manifest = _features(encoder, info, train, batch_size, device)
    val_x, val_y, val_manifest = _features(encoder, info, val, batch_size, device)
    return info, (train_x, train_y), (val_x, val_y), same_classes(train_manifest, val_manifest, train, val)


def same_classes(train_manifest: dict, val_manifest: dict, train: str | Path, val: str | Path) -> list[str]:
    """The class names of two shard sets that must share them (names and order)."""
    if train_manifest["classes"] != val_manifest["classes"]:
        raise EvalError(
            f"{train} has {train_manifest['num_classes']} classes and {val} has "
            f"{val_manifest['num_classes']} (or other names); evaluate on splits of one dataset"
        )
    return val_manifest["classes"]


def save_weights(module: torch.nn.Module, path: Path) -> Path:
    """A trained classifier or probe as safetensors, written under a temporary name and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_safetensors({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, tmp)
        tmp.replace(path)
    except OSError as err:
        raise EvalError(f"{path}: cannot write ({err.strerror or err}); free space, then run again") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def tracker(out, wandb: bool, tensorboard: bool):
    """An Accelerator that logs this evaluation to W&B / TensorBoard, or None when neither is asked."""
    if not (wandb or tensorboard):
        return None
    return eval_accelerator(Path(out), Path(out).name, {}, wandb, tensorboard, cpu=True)


def write_results(out: Path, results: dict, accelerator=None) -> dict:
    """results.json; with an Accelerator, its scalar metrics go to the trackers too, which are then closed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if accelerator is not None:
        scalars = {
            k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        accelerator.log(scalars)
        accelerator.end_training()
    return results


def knn_eval(
    encoder_path,
    train,
    val,
    out,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 256,
    device: str = "cpu",
    wandb: bool = False,
    tensorboard: bool = False,
    vote: str = "weighted",
) -> dict:
    """kNN top-1 of the encoder (`vote`: weighted or majority): `train` is the labelled bank, `val` the
    queries."""
    started = time.time()
    check_inputs(out, encoder_path, train, val)
    info, (bank, bank_labels), (queries, labels), classes = labelled_pair(
        encoder_path, train, val, batch_size, torch.device(device)
    )
    num_classes = len(classes)
    predicted = knn_predict(bank, bank_labels, queries, num_classes, k, temperature, vote=vote)
    return write_results(
        Path(out),
        {
            "protocol": "knn",
            "top1": (predicted == labels).float().mean().item(),
            "k": k,
            "vote": vote,
            "temperature": temperature if vote == "weighted" else None,
            "encoder": str(encoder_path),
            "encoder_sha256": info["sha256"],
            "train": str(train),
            "val": str(val),
            "train_samples": len(bank_labels),
            "val_samples": len(labels),
            "seconds": time.time() - started,
        },
        tracker(out, wandb, tensorboard),
    )


def linear_eval(
    encoder_path,
    train,
    val,
    out,
    epochs: int = 300,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
    head: str = "linear",
    wandb: bool = False,
    tensorboard: bool = False,
) -> dict:
    """A `linear` or `mlp2` (C1) probe on cached features: top-1, top-5, per-class accuracy, confusion."""
    from sklearn.metrics import confusion_matrix

    started = time.time()
    check_inputs(out, encoder_path, train, val)
    info, (train_x, train_y), (val_x, val_y), classes = labelled_pair(
        encoder_path, train, val, batch_size, torch.device(device)
    )
    num_classes = len(classes)
    probe = fit_linear_probe(
        train_x,
        train_y,
        num_classes,
        epochs,
        lr,
        weight_decay,
        seed,
        head=head,
        show_progress=True,
    )
    with torch.no_grad():
        logits = probe(val_x)
    top5 = logits.topk(min(5, num_classes), dim=1).indices
    matrix = confusion_matrix(
        val_y.cpu().numpy(), logits.argmax(1).cpu().numpy(), labels=list(range(num_classes))
    )
    per_class = (matrix.diagonal() / matrix.sum(1).clip(min=1)).tolist()
    out = Path(out)
    plot_confusion(matrix, classes, out / "confusion.png")
    save_weights(probe, out / "probe.safetensors")
    return write_results(
        out,
        {
            "protocol": f"{head} probe (cached features)",
            "top1": float(matrix.trace() / matrix.sum()),
            "top5": (top5 == val_y[:, None]).any(1).float().mean().item(),
            "per_class": dict(zip(classes, per_class, strict=True)),
            "settings": {
                "epochs": epochs,
                "lr": lr,
                "weight_decay": weight_decay,
                "seed": seed,
                "head": head,
            },
            "encoder": str(encoder_path),
            "encoder_sha256": info["sha256"],
            "train": str(train),
            "val": str(val),
            "train_samples": len(train_y),
            "val_samples": len(val_y),
            "seconds": time.time() - started,
        },
        tracker(out, wandb, tensorboard),
    )


def plot_confusion(matrix, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    side = min(12, 2 + 0.4 * len(classes))
    figure, axes = plt.subplots(figsize=(side, side))
    axes.imshow(matrix, cmap="Blues")
    if len(classes) <= 30:
        axes.set_xticks(range(len(classes)), classes, rotation=90)
        axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
