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
    """The encoder's files, labelled shard folders sharing one class list and the encoder's channel
    count; EvalError (or the shards' own error) otherwise. Returns the manifests by role. (`--out` is
    vetted, and locked, by `trainers._lock.output_folder` before.)"""
    channels = None
    if encoder is not None:
        channels = _recorded_channels(encoder_files(encoder)[1])
    manifests = {}
    for role, folder in (("train", train), ("val", val)):
        if folder is not None:
            manifests[role] = shards.load_manifest(folder)
            if not manifests[role]["labeled"]:
                raise EvalError(f"{folder}: unlabelled shards cannot be evaluated; use a labelled split")
            if channels is not None:
                same_channels(channels, manifests[role], f"the encoder {encoder}", folder)
    if train is not None:
        check_classes(manifests["train"], train)
    if len(manifests) == 2:
        same_classes(manifests["train"], manifests["val"], train, val)
        if channels is None:  # a model made for train's images is measured on val's
            stored = manifests["train"]["image"]["channels"]
            same_channels(stored, manifests["val"], f"a model trained on {train}", val)
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


def _recorded_channels(info_path: Path) -> int | None:
    """encoder.json's `in_chans`, or None when the file cannot tell (the reader names what is wrong)."""
    try:
        channels = json.loads(info_path.read_text()).get("in_chans")
    except (OSError, ValueError, AttributeError):
        return None
    return channels if isinstance(channels, int) else None


def same_channels(channels: int, manifest: dict, model: str, folder) -> None:
    """Refuse shards whose images have another channel count than `model` (named as "the encoder
    X", "the classifier X") takes. Repeating a gray channel three times would run, but an encoder
    trained on colour images measured on digits (or the reverse) is a mistake far more often than a
    plan, and it would be reported as a normal accuracy: pretrain an encoder on such images instead."""
    stored = manifest["image"]["channels"]
    if stored != channels:
        raise EvalError(
            f"{folder} holds {stored}-channel images, but {model} takes {channels} channels; "
            f"evaluate it on {channels}-channel shards (a model trained on colour images does not "
            "read gray ones, nor the reverse)"
        )


def device_for(cpu: bool) -> torch.device:
    """The GPU when there is one and `cpu` is off."""
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


def same_classes(train_manifest: dict, val_manifest: dict, train: str | Path, val: str | Path) -> list[str]:
    """The class names of two shard sets that must share them (names and order)."""
    if train_manifest["classes"] != val_manifest["classes"]:
        raise EvalError(
            f"{train} and {val} hold other classes: "
            f"{class_difference(train_manifest['classes'], val_manifest['classes'], train, val)}; "
            "evaluate on splits of one dataset"
        )
    return val_manifest["classes"]


def class_difference(first: list[str], second: list[str], first_name, second_name) -> str:
    """How two class lists differ, for a message: the counts, then the names only one of them has, or
    the first place where the same names stand in another order (labels would mean other classes)."""
    counts = f"{len(first)} classes in {first_name}, {len(second)} in {second_name}"
    only_first = [c for c in first if c not in second]
    only_second = [c for c in second if c not in first]
    if not (only_first or only_second):
        at = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), None)
        if at is None:
            return f"{counts}, one of them naming a class twice"
        return f"{counts}, the same names in another order (label {at} is {first[at]!r} and {second[at]!r})"
    told = [
        f"only {name} has {_names(only)}"
        for name, only in ((first_name, only_first), (second_name, only_second))
        if only
    ]
    return f"{counts}; {'; '.join(told)}"


def _names(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


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
