"""What every evaluation reads and writes: its inputs checked before any work, and its outputs.

Inputs (the encoder's files, labelled shard folders of one class list) are checked in a blink, before
a model is built or a feature extracted; the output folder is vetted and locked before them
(`trainers._lock`). Outputs go through `fastclr.files.write_atomic`: results.json, weights
(safetensors), confusion.png; a reader sees the old file or the new, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from accelerate import Accelerator

from fastclr import shards
from fastclr.files import write_advice, write_atomic
from fastclr.trainers._confusion import confusion_png
from fastclr.trainers._encoder_file import encoder_files
from fastclr.trainers._errors import EvalError
from fastclr.trainers._knn import gather_rows
from fastclr.trainers._tracking import eval_accelerator


def check_inputs(encoder=None, train=None, val=None) -> dict[str, dict]:
    """The encoder's files and labelled shard folders sharing one class list; EvalError (or the
    shards' own error) otherwise. Returns the manifests by role. (`--out` is vetted, and locked, by
    `trainers._lock.output_folder` before.)"""
    if encoder is not None:
        encoder_files(encoder)
    manifests = {}
    for role, folder in (("train", train), ("val", val)):
        if folder is not None:
            manifests[role] = shards.load_manifest(folder)
            if not manifests[role]["labeled"]:
                raise EvalError(f"{folder}: unlabelled shards cannot be evaluated; use a labelled split")
    if train is not None:
        check_classes(manifests["train"], train)
    if len(manifests) == 2:
        same_classes(manifests["train"], manifests["val"], train, val)
    return manifests


def check_classes(manifest: dict, folder) -> None:
    """Shards to learn or cluster from must hold images of two classes at least: with one, every
    prediction is that class and the accuracy a meaningless 100%."""
    counts = manifest.get("class_counts") or [1] * manifest["num_classes"]
    present = [name for name, count in zip(manifest["classes"], counts, strict=False) if count > 0]
    if len(present) < 2:
        held = f"only class {present[0]!r}" if present else "no class"
        raise EvalError(
            f"{folder}: its images hold {held}, so any classifier scores 100%; evaluate on shards of "
            "two classes or more"
        )


def device_for(cpu: bool) -> torch.device:
    """The GPU when there is one and `cpu` is off."""
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


def same_classes(train_manifest: dict, val_manifest: dict, train: str | Path, val: str | Path) -> list[str]:
    """The class names of two shard sets that must share them (names and order)."""
    if train_manifest["classes"] != val_manifest["classes"]:
        raise EvalError(
            f"{train} has {train_manifest['num_classes']} classes and {val} has "
            f"{val_manifest['num_classes']} (or other names); evaluate on splits of one dataset"
        )
    return val_manifest["classes"]


def save_weights(module: torch.nn.Module, path: Path) -> Path:
    """A trained classifier or probe as safetensors; a full disk is one EvalError naming `path`."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return _write(path, safetensors.torch.save(state))


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return write_atomic(path, data)
    except OSError as err:
        raise EvalError(
            f"{path}: cannot write ({err.strerror or err}); {write_advice(err, path.parent)}, then run again"
        ) from None


def write_json(path: Path, obj: dict) -> Path:
    return _write(path, json.dumps(obj, indent=1) + "\n")


def tracker(out, wandb: bool, tensorboard: bool) -> Accelerator | None:
    """An Accelerator that logs this evaluation to W&B / TensorBoard, or None when neither is asked."""
    if not (wandb or tensorboard):
        return None
    return eval_accelerator(Path(out), Path(out).name, {}, wandb, tensorboard, cpu=True)


def write_results(out: Path, results: dict, accelerator: Accelerator | None = None) -> dict:
    """results.json (by the main process); with an Accelerator, its scalar metrics go to the trackers
    too, which are then closed."""
    if accelerator is None or accelerator.is_main_process:
        write_json(Path(out) / "results.json", results)
    if accelerator is not None:
        scalars = {
            k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        accelerator.log(scalars)
        accelerator.end_training()
    return results


@torch.no_grad()
def predictions(model: torch.nn.Module, loader, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top` best classes of every sample of every rank's share of the loader, and the labels."""
    model.eval()
    best, labels = [], []
    for images, label in loader:
        best.append(model(images).topk(top, dim=1).indices)
        labels.append(label)
    return gather_rows(torch.cat(best)), gather_rows(torch.cat(labels))


def accuracy_report(top5: torch.Tensor, labels: torch.Tensor, classes: list[str], out: Path | None) -> dict:
    """Top-1 (the first column), top-5 and per-class accuracy; confusion.png in `out` unless None."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(
        labels.cpu().numpy(), top5[:, 0].cpu().numpy(), labels=list(range(len(classes)))
    )
    if out is not None:
        _write(out / "confusion.png", confusion_png(matrix, classes))
    return {
        "top1": float(matrix.trace() / matrix.sum()),
        "top5": (top5 == labels[:, None]).any(1).float().mean().item(),
        "per_class": dict(
            zip(classes, (matrix.diagonal() / matrix.sum(1).clip(min=1)).tolist(), strict=True)
        ),
    }


def final_report(
    model: torch.nn.Module, loader, accelerator: Accelerator, classes: list[str], out: Path
) -> dict:
    """`accuracy_report` over every rank's val share; the main process draws confusion.png."""
    top5, labels = predictions(model, loader, min(5, len(classes)))
    return accuracy_report(top5, labels, classes, out if accelerator.is_main_process else None)
