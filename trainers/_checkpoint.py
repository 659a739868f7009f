"""Checkpoints written atomically and loaded without pickle.

`checkpoints/step-00000123/` holds model.safetensors, optimizer.pt (read back
with `torch.load(weights_only=True)`), state.json (epoch, step, schedule,
scaler, tracker run id) and per rank rank-<r>.json plus rng-<r>.safetensors
(RNG streams and the DALI loader's position), and probe.pt when the online probe
runs (its head and optimiser, read back the same safe way). Everything is written into a
hidden `.step-...tmp` folder that is renamed once complete, so a crash mid-write
leaves only the previous checkpoint; the newest `keep` are kept. `recover` tidies
what a crash left (half-written folders, a replaced checkpoint set aside) before
a run looks for the newest one. Files are serialised in memory and written by
`write_bytes`, so a full disk is an OSError (not safetensors' or torch's own
errors); any OSError while saving (full disk, no permission) becomes a
CheckpointError after the unfinished folder is removed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from safetensors.torch import load_file

PREFIX = "step-"
PROBE = "probe.pt"


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint."""

    epoch: int = 0  # epoch in progress
    step_in_epoch: int = 0  # batches of that epoch already taken
    global_step: int = 0  # optimiser steps
    tracker_id: str | None = None  # W&B run id, so a resumed run logs to the same run
    world_size: int = 1
    settings: dict | None = None  # flattened settings a resumed run must repeat (trainers/_resume.py)
    epoch_loss_sum: float = 0.0  # the epoch's losses so far: a resumed epoch_loss averages the whole epoch
    # The line of the epoch just finished, until the kNN monitor has run and it is logged: the checkpoint
    # comes first, so a crash in between loses nothing and the resumed run logs it.
    epoch_record: dict | None = None


def name_of(global_step: int) -> str:
    """The folder name of the checkpoint at `global_step`."""
    return f"{PREFIX}{global_step:08d}"


class CheckpointError(Exception):
    """A checkpoint could not be written; the previous ones are untouched."""


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, if any (unfinished `.tmp` ones are ignored)."""
    done = sorted(p for p in folder.glob(f"{PREFIX}*") if p.is_dir() and (p / "state.json").is_file())
    return done[-1] if done else None


def recover(folder: Path) -> None:
    """Undo what a crash mid-save left: drop unfinished `.tmp` folders; put back a set-aside `.old` one.

    Run on the main process before any rank calls `latest`.
    """
    if not folder.is_dir():
        return
    for path in folder.glob(f".{PREFIX}*.old"):
        final = folder / path.name[1 : -len(".old")]
        if final.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:  # killed between setting the old one aside and renaming its replacement into place
            os.replace(path, final)
    for path in folder.glob(f".{PREFIX}*.tmp"):
        shutil.rmtree(path, ignore_errors=True)
    for path in folder.glob(f"{PREFIX}*"):
        if path.is_dir() and not (path / "state.json").is_file():  # killed while pruning it
            shutil.rmtree(path, ignore_errors=True)


def _remove(path: Path) -> None:
    """Delete a checkpoint so that no crash mid-way leaves it looking complete: state.json goes first."""
    (path / "state.json").unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def _rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    python = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {
        "python": [python[0], list(python[1]), python[2]],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
    }
    return meta, tensors


def _set_rng_state(meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync. A full disk raises OSError with its errno, where safetensors' save_file raises
    SafetensorError and torch.save a RuntimeError ("unexpected pos") that name no cause."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors serialises in memory; our write gives a full disk its OSError."""
    write_bytes(path, safetensors.torch.save(tensors))


def write_torch(obj: object, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def _write_json(path: Path, obj: object) -> None:
    write_bytes(path, json.dumps(obj).encode())


def save(
    folder: Path,
    accelerator,
    model,
    optimizer,
    scheduler,
    state: TrainState,
    loader_state: bytes,
    keep: int,
    scaler=None,
    probe=None,
) -> Path:
    """Write a checkpoint of every rank into `folder/step-<global_step>`; returns its path.

    `probe`: anything with state_dict() (the online probe), saved as probe.pt."""
    name = name_of(state.global_step)
    final, tmp, old = folder / name, folder / f".{name}.tmp", folder / f".{name}.old"
    try:
        _write(tmp, accelerator, model, optimizer, scheduler, scaler, state, loader_state, probe)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {final} ({err.strerror or err})") from None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again: set the old one aside until the new one is in place
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        for stale in sorted(p for p in folder.glob(f"{PREFIX}*") if p.is_dir())[:-keep]:
            _remove(stale)
    accelerator.wait_for_everyone()
    return final


def _write(
    tmp: Path, accelerator, model, optimizer, scheduler, scaler, state: TrainState, loader_state: bytes, probe
) -> None:
    """Every rank's files into `tmp`; the main process writes state.json last, marking it complete."""
    if accelerator.is_main_process:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    meta, tensors = _rng_state()
    _write_json(tmp / f"rank-{rank}.json", {**meta, "loader": base64.b64encode(loader_state).decode()})
    write_safetensors(tensors, tmp / f"rng-{rank}.safetensors")
    model_state = accelerator.get_state_dict(model)  # collective under some distributed modes
    accelerator.wait_for_everyone()  # every rank's files are in before state.json says complete
    if accelerator.is_main_process:
        write_safetensors({k: v.contiguous() for k, v in model_state.items()}, tmp / "model.safetensors")
        write_torch(optimizer.state_dict(), tmp / "optimizer.pt")
        if probe is not None:  # every rank's probe is the same (gradients averaged)
            write_torch(probe.state_dict(), tmp / PROBE)
        _write_json(
            tmp / "state.json",
            {
                "train": vars(state),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
        )


def read_state(path: Path) -> tuple[TrainState, dict]:
    """The checkpoint's TrainState and the rest of its state.json (schedule, scaler)."""
    saved = json.loads((path / "state.json").read_text())
    train = dict(saved["train"])
    train.pop("fixed", None)  # checkpoints before `settings` recorded a few keys there
    return TrainState(**train), saved


def restore(
    path: Path, saved: dict, accelerator, model, optimizer, scheduler, scaler=None, probe=None
) -> bytes:
    """Load model, optimiser, schedule, loss scaler, this rank's RNG and the probe (if the run has one
    and the checkpoint holds it) from `path`; returns this rank's loader position."""
    accelerator.unwrap_model(model).load_state_dict(load_file(path / "model.safetensors", device="cpu"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(saved["scheduler"])
    if probe is not None and (path / PROBE).is_file():
        probe.load_state_dict(torch.load(path / PROBE, map_location="cpu", weights_only=True))
    if saved["scaler"] is not None and scaler is not None:
        scaler.load_state_dict(saved["scaler"])
    rank = accelerator.process_index
    meta = json.loads((path / f"rank-{rank}.json").read_text())
    _set_rng_state(meta, load_file(path / f"rng-{rank}.safetensors"))
    return base64.b64decode(meta["loader"])
