"""The encoder file: `encoder.safetensors` + `encoder.json`, written by pretraining or `import-weights`,
read by every evaluation, `report` and users' own code.

encoder.json describes how to rebuild and feed the weights: the architecture (`encoder`, `cifar_stem`,
`in_chans`, `num_features`), the input (`image_size`, `mean`, `std`), where it came from, the
weights' sha256 and a hash of the description itself (its schema and hashes: trainers/_encoder_info.py),
so changed weights or settings are refused rather than evaluated.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from fastclr.config import check_settings
from fastclr.encoders import build_encoder
from fastclr.files import write_advice, write_atomic
from fastclr.trainers._encoder_info import describe, read_encoder_info
from fastclr.trainers._errors import EvalError, TrainError
from fastclr.trainers._eval_config import ImportWeightsConfig
from fastclr.trainers._knn import is_main_process
from fastclr.trainers._lock import writes_out


def export_encoder(run_dir: Path, encoder: torch.nn.Module, cfg, manifest: dict, channels: int) -> Path:
    """encoder.safetensors and encoder.json: what eval needs to rebuild and feed it."""
    info = {
        "encoder": cfg.model.encoder,
        "cifar_stem": cfg.model.cifar_stem,
        "in_chans": channels,
        "num_features": encoder.num_features,
        "image_size": cfg.data.size,
        "mean": manifest["mean"],
        "std": manifest["std"],
        "pretrained_on": cfg.data.train,
        "data_fraction": cfg.data.fraction,
    }
    return _write_encoder(run_dir, encoder, info)


@writes_out("import-weights")
def import_encoder(cfg: ImportWeightsConfig) -> tuple[Path, dict]:
    """An encoder folder, as `fastclr pretrain` exports one, from a local torchvision/timm weights file:
    ImageNet-supervised baselines then go through the same linear and fine-tune commands.

    Returns encoder.safetensors and the load report (`loaded`, `missing`, `shape_mismatch`, `unused`).
    """
    check_settings(cfg)
    encoder = build_encoder(cfg.model, cfg.cifar_stem, cfg.file, in_chans=cfg.channels)
    out = Path(cfg.out)
    info = {
        "encoder": cfg.model,
        "cifar_stem": cfg.cifar_stem,
        "in_chans": cfg.channels,
        "num_features": encoder.num_features,
        "image_size": cfg.size,
        "pretrained_on": f"imported from {cfg.file}",
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _write_encoder(out, encoder, info), encoder.load_report
    except OSError as err:
        raise TrainError(
            f"{err.filename or out}: cannot write ({err.strerror or err}); {write_advice(err, out)}, "
            "then run again"
        ) from None


def _write_encoder(folder: Path, encoder: torch.nn.Module, info: dict) -> Path:
    """The weights, then their description with both hashes: each file is written whole or not at
    all, and a reader that finds the new description finds its weights."""
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    weights = safetensors.torch.save(state)
    write_atomic(folder / "encoder.safetensors", weights)
    write_atomic(folder / "encoder.json", describe(info, weights))
    return folder / "encoder.safetensors"


def encoder_files(path: str | Path) -> tuple[Path, Path]:
    """encoder.safetensors and encoder.json of a run directory or of the weights file's folder."""
    path = Path(path)
    weights = path / "encoder.safetensors" if path.is_dir() else path
    info_path = weights.with_name("encoder.json")
    if not weights.is_file():
        raise EvalError(
            f"{weights}: not found; pass a run directory made by `fastclr pretrain` or its "
            "encoder.safetensors"
        )
    if not info_path.is_file():
        raise EvalError(
            f"{info_path}: missing; the encoder's architecture is recorded there by `fastclr pretrain`"
        )
    return weights, info_path


def load_encoder(path: str | Path, trust_unhashed: bool = False) -> tuple[torch.nn.Module, dict]:
    """The frozen encoder of a run directory or an encoder.safetensors file, and its encoder.json,
    checked whole: the schema, the description's hash, then the weights' hash, before the weights
    are built. `trust_unhashed`: use a description that records no hash (said in one line)."""
    weights, info_path = encoder_files(path)
    info = read_encoder_info(info_path, trust_unhashed, say=_note)
    try:
        data = weights.read_bytes()
    except OSError as err:
        raise EvalError(f"{weights}: cannot read ({err.strerror or err})") from None
    digest = hashlib.sha256(data).hexdigest()
    if info.get("sha256", digest) != digest:
        raise EvalError(
            f"{weights}: sha256 differs from {info_path.name}; the weights were changed or replaced"
        )
    encoder = build_encoder(info["encoder"], info["cifar_stem"], in_chans=info["in_chans"])
    try:
        state = safetensors.torch.load(data)
    except safetensors.SafetensorError as err:  # only weights nobody hashed get here
        raise EvalError(
            f"{weights}: not a whole safetensors file ({err}); export the encoder again"
        ) from None
    try:
        encoder.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise EvalError(
            f"{weights}: does not fit a {info['encoder']} (cifar_stem={info['cifar_stem']}, "
            f"{info['in_chans']} channels): {first[:160]}; another architecture or width?"
        ) from None
    return encoder.eval().requires_grad_(False), {**info, "sha256": digest}


def _note(text: str) -> None:
    if is_main_process():
        print(text)


def export_checkpoint_encoder(cfg, out: Path) -> Path:
    """The encoder of the newest checkpoint of the pretrain run `cfg` (a PretrainConfig) whose files
    verify and whose weights are finite, as encoder.safetensors + encoder.json in `out`: a run can be
    evaluated while it trains. A damaged newer checkpoint is passed over with one line naming it."""
    from fastclr import shards
    from fastclr.trainers._checkpoint import Damaged, newest_verified, read_weights

    damaged = []
    while (path := newest_verified(Path(cfg.run_dir) / "checkpoints", damaged)) is not None:
        try:
            state = read_weights(path)
            break
        except Damaged as err:
            damaged.append((path, str(err)))
    skipped = "; ".join(f"{p.name} ({why})" for p, why in damaged)
    if path is None:
        why = f": none usable, {skipped}" if damaged else ""
        raise TrainError(f"run_dir {cfg.run_dir}: no checkpoint to export an encoder from{why}")
    if damaged:
        print(f"note: passed over damaged checkpoint(s) {skipped}; exporting {path.name}")
    manifest = shards.load_manifest(cfg.data.train)
    channels = cfg.data.channels or manifest["image"]["channels"]
    encoder = build_encoder(cfg.model.encoder, cfg.model.cifar_stem, in_chans=channels)
    encoder.load_state_dict(
        {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    export_encoder(Path(out), encoder, cfg, manifest, channels)
    return Path(out)
