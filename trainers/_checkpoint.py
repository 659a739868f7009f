"""Checkpoints written atomically, verified before use, and loaded without pickle.

`checkpoints/step-00000123/` holds model.safetensors, optimizer.pt (read back with
`torch.load(weights_only=True)`), per rank rank-<r>.json plus rng-<r>.safetensors (RNG streams and the
DALI loader's position), probe.pt when the online probe runs (its head and optimiser, read back the
same safe way), and state.json, written last: epoch, step, schedule, scaler, tracker run id, the
size and sha256 of every other file, and a sha256 of its own content. `verify` checks all of them
before anything is loaded, and `restore` names the file of any fault it meets (`Damaged`), so a
truncated, torn or flipped file is never loaded and never ends in a library's traceback.

Everything is written into a hidden `.step-...tmp` folder that is renamed once complete, so a crash
mid-write leaves only the previous checkpoint; an old one is renamed to such a temp name before it
is deleted, so a crash mid-prune never leaves a step folder with files missing either. `recover`
removes what a crash left (temp folders; a replaced checkpoint set aside is put back). A damaged
checkpoint is renamed to `.damaged-step-...` (`set_aside`), never deleted. Files are serialised in
memory and written by `write_bytes`, so a full disk is an OSError (not safetensors' or torch's own
errors); any OSError while saving (full disk, no permission) becomes a CheckpointError after the
unfinished folder is removed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from fastclr import shards
from fastclr.trainers._faults import first_line

PREFIX = "step-"
ASIDE = ".damaged-"  # a damaged checkpoint's folder is renamed to this prefix + its name
STATE = "state.json"
MODEL = "model.safetensors"
OPTIMIZER = "optimizer.pt"
PROBE = "probe.pt"
# What reading a damaged file raises in json, base64, safetensors, torch and numpy; a fault of ours
# (AttributeError, NameError, ...) still shows its traceback.
READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, RuntimeError, EOFError, SafetensorError)


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


class Damaged(Exception):
    """A checkpoint that cannot be resumed: `file` (a name in its folder) and why."""

    def __init__(self, file: str, why: str):
        super().__init__(f"{file}: {why}")
        self.file, self.why = file, why


def step_folders(folder: Path) -> list[Path]:
    """The checkpoint folders in `folder`, oldest first (not the hidden temp or set-aside ones)."""
    return sorted(p for p in folder.glob(f"{PREFIX}*") if p.is_dir())


def latest(folder: Path) -> Path | None:
    """The newest checkpoint in `folder` that has its state.json; `verify` tells whether it is whole."""
    done = [p for p in step_folders(folder) if (p / STATE).is_file()]
    return done[-1] if done else None


def newest_verified(folder: Path, damaged: list[tuple[Path, str]]) -> Path | None:
    """The newest checkpoint in `folder` not in `damaged` whose files verify; each newer one that does
    not is added to `damaged` as (path, why)."""
    known = {path for path, _ in damaged}
    for path in reversed(step_folders(folder)):
        if path in known:
            continue
        try:
            verify(path)
        except Damaged as err:
            damaged.append((path, str(err)))
            continue
        return path
    return None


def recover(folder: Path) -> None:
    """Undo what a crash mid-save or mid-prune left: drop `.tmp` folders; put back a set-aside `.old` one.

    A step folder with files missing is left where it is: resuming reports it and sets it aside.
    Run on the main process before any rank looks for a checkpoint.
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


def set_aside(path: Path) -> Path:
    """Rename the damaged checkpoint `path` to `.damaged-<name>` beside it (a number added when that
    is taken); it is kept for the user to inspect or repair, never pruned or deleted."""
    aside, n = path.with_name(ASIDE + path.name), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{ASIDE}{path.name}.{n}")
    os.replace(path, aside)
    return aside


def _remove(path: Path) -> None:
    """Delete an old checkpoint: renamed to a temp name first, so a crash mid-way leaves a `.tmp`
    folder (removed on the next start), never a step folder with some of its files gone."""
    gone = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


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


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _content_sha256(meta: dict) -> str:
    """The sha256 of state.json's content as JSON parses it (keys sorted), its own "sha256" left out."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _seal(meta: dict) -> bytes:
    """state.json's bytes: `meta` and the sha256 of its content (replacing any it has)."""
    meta = json.loads(json.dumps(meta))  # as a reader will see it (tuples as lists, keys as strings)
    meta.pop("sha256", None)
    return json.dumps({**meta, "sha256": _content_sha256(meta)}).encode()


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

    Of the older checkpoints, the newest `keep - 1` are kept: newer ones than this (none after a
    resume, which sets damaged ones aside) are neither counted nor pruned, so the one just written
    always stays. `probe`: anything with state_dict() (the online probe), saved as probe.pt."""
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
        older = [p for p in step_folders(folder) if p.name < final.name]
        for stale in older[: max(len(older) - (keep - 1), 0)]:
            _remove(stale)
    accelerator.wait_for_everyone()
    return final


def _write(
    tmp: Path, accelerator, model, optimizer, scheduler, scaler, state: TrainState, loader_state: bytes, probe
) -> None:
    """Every rank's files into `tmp`; the main process writes state.json last, marking it complete and
    recording every file's size and sha256 (other ranks' files read back from the shared folder)."""
    if accelerator.is_main_process:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    meta, tensors = _rng_state()
    ranked = json.dumps({**meta, "loader": base64.b64encode(loader_state).decode()}).encode()
    files = {
        f"rank-{rank}.json": _put(tmp / f"rank-{rank}.json", ranked),
        f"rng-{rank}.safetensors": _put(tmp / f"rng-{rank}.safetensors", safetensors.torch.save(tensors)),
    }
    model_state = accelerator.get_state_dict(model)  # collective under some distributed modes
    accelerator.wait_for_everyone()  # every rank's files are in before state.json says complete
    if accelerator.is_main_process:
        weights = {k: v.contiguous() for k, v in model_state.items()}
        main = {  # serialised one at a time: only one file's bytes are held in memory
            MODEL: _put(tmp / MODEL, safetensors.torch.save(weights)),
            OPTIMIZER: _put(tmp / OPTIMIZER, _torch_bytes(optimizer.state_dict())),
        }
        if probe is not None:  # every rank's probe is the same (gradients averaged)
            main[PROBE] = _put(tmp / PROBE, _torch_bytes(probe.state_dict()))
        files = main | files
        for other in range(accelerator.num_processes):
            for name in (f"rank-{other}.json", f"rng-{other}.safetensors"):
                if name not in files:
                    files[name] = {
                        "bytes": (tmp / name).stat().st_size,
                        "sha256": shards.sha256_file(tmp / name),
                    }
        body = {
            "train": vars(state),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "files": files,
        }
        write_bytes(tmp / STATE, _seal(body))


def _put(path: Path, data: bytes) -> dict:
    """Write `data` to `path`; its size and sha256, for state.json."""
    write_bytes(path, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _read(path: Path, name: str, load: Callable[[Path], object]) -> object:
    """`load(path / name)`; whatever a damaged or missing file raises becomes `Damaged` naming it."""
    try:
        return load(path / name)
    except FileNotFoundError:
        raise Damaged(name, "missing") from None
    except pickle.UnpicklingError as err:  # torch.load(weights_only=True) met a pickle that is not tensors
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = found[1] if found else _reason(err)
        raise Damaged(
            name, f"not a fastclr checkpoint file: it holds pickled code ({what}); never load it"
        ) from None
    except json.JSONDecodeError as err:
        raise Damaged(name, f"not valid JSON ({err.msg} at byte {err.pos:,})") from None
    except READ_ERRORS as err:
        raise Damaged(name, f"cannot be read ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    """The first sentence of an error's first line: torch's and DALI's go on with generic advice."""
    return first_line(err).split(". ")[0][:160]


def _json(path: Path) -> object:
    return json.loads(path.read_bytes())


def _torch(path: Path) -> object:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_meta(path: Path) -> tuple[dict, bool]:
    """(state.json's content, whether it has checksums), its own sha256 checked; `Damaged` when it is
    missing, torn or changed. A checkpoint from before checksums has none to check."""
    meta = _read(path, STATE, _json)
    if not isinstance(meta, dict) or not isinstance(meta.get("train"), dict):
        raise Damaged(STATE, "not a fastclr checkpoint's state")
    if "files" not in meta and "sha256" not in meta:
        return meta, False
    if meta.pop("sha256", None) != _content_sha256(meta):
        raise Damaged(STATE, "sha256 mismatch")
    return meta, True


def verify(path: Path) -> None:
    """Check that every file of the checkpoint `path` has the size and sha256 its state.json records
    (and state.json its own); `Damaged` names the first that does not. A checkpoint from before
    checksums is not checked here: `restore` names its faults as it loads."""
    meta, sealed = read_meta(path)
    listed = meta["files"] if sealed else {}
    for name, want in listed.items():  # sizes first: a truncated file is named without hashing the rest
        size = _read(path, name, lambda p: p.stat().st_size)
        if size != want["bytes"]:
            raise Damaged(name, f"{size:,} bytes where {want['bytes']:,} were written")
    for name, want in listed.items():
        if _read(path, name, shards.sha256_file) != want["sha256"]:
            raise Damaged(name, "sha256 mismatch")


def train_state(meta: dict) -> TrainState:
    """The TrainState recorded in a checkpoint's state.json content."""
    train = dict(meta["train"])
    train.pop("fixed", None)  # checkpoints before `settings` recorded a few keys there
    try:
        return TrainState(**train)
    except TypeError as err:
        raise Damaged(STATE, f"not a fastclr checkpoint's state ({first_line(err)})") from None


def non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor holding NaN or infinity, or None (one host read)."""
    floats = {k: t for k, t in tensors.items() if torch.is_tensor(t) and t.is_floating_point()}
    if not floats or bool(torch.stack([torch.isfinite(t).all() for t in floats.values()]).all()):
        return None
    return next(k for k, t in floats.items() if not bool(torch.isfinite(t).all()))


def optimizer_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """An optimiser state_dict's per-parameter tensors, named `state.<param>.<key>`."""
    return {f"state.{i}.{k}": v for i, s in state_dict["state"].items() for k, v in s.items()}


def _apply(name: str, action: Callable[[], object]) -> None:
    """Load what `name` held into the run; a mismatch (another shape, a missing key) names the file."""
    try:
        action()
    except READ_ERRORS as err:
        raise Damaged(name, f"does not fit this run ({_reason(err)})") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of the checkpoint `path`, on the CPU; `Damaged` when they cannot be read or
    hold non-finite values."""
    weights = _read(path, MODEL, lambda p: load_file(p, device="cpu"))
    if bad := non_finite(weights):
        raise Damaged(MODEL, f"holds non-finite weights ({bad})")
    return weights


def restore(
    path: Path, meta: dict, accelerator, model, optimizer, scheduler, scaler=None, probe=None
) -> bytes:
    """Load model, optimiser, schedule, loss scaler, this rank's RNG and the probe (if the run has one)
    from the checkpoint `path` whose state.json content is `meta`; returns this rank's loader
    position. Everything is read and checked before any of it is loaded: `Damaged` names the file
    that cannot be read, does not fit, or holds non-finite weights or optimiser state."""
    rank = accelerator.process_index
    weights = read_weights(path)
    optim = _read(path, OPTIMIZER, _torch)
    try:
        bad = non_finite(optimizer_tensors(optim))
    except (TypeError, KeyError, AttributeError) as err:
        raise Damaged(OPTIMIZER, f"not an optimiser's state ({first_line(err)})") from None
    if bad:
        raise Damaged(OPTIMIZER, f"holds non-finite optimiser state ({bad})")
    recorded = meta["train"].get("settings") is not None  # else it may predate probe.pt
    wants_probe = probe is not None and (recorded or (path / PROBE).is_file())
    probe_state = _read(path, PROBE, _torch) if wants_probe else None
    ranked = _read(path, f"rank-{rank}.json", _json)
    try:
        position = base64.b64decode(ranked["loader"], validate=True)
    except READ_ERRORS as err:
        raise Damaged(f"rank-{rank}.json", f"no loader position in it ({first_line(err)})") from None
    rng = _read(path, f"rng-{rank}.safetensors", load_file)
    _apply(MODEL, lambda: accelerator.unwrap_model(model).load_state_dict(weights))
    _apply(OPTIMIZER, lambda: optimizer.load_state_dict(optim))
    _apply(STATE, lambda: scheduler.load_state_dict(meta["scheduler"]))
    if probe_state is not None:
        _apply(PROBE, lambda: probe.load_state_dict(probe_state))
    if meta.get("scaler") is not None and scaler is not None:
        _apply(STATE, lambda: scaler.load_state_dict(meta["scaler"]))
    _apply(f"rank-{rank}.json and rng-{rank}.safetensors", lambda: _set_rng_state(ranked, rng))
    return position
