"""YAML + `key=value` overrides -> a validated config object, before anything starts.

OmegaConf's structured mode refuses unknown keys; we rephrase its errors into
one line that names the key and the valid ones, then check values the schema's
types cannot (choices, ranges, that the shard folders exist).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

import encoders
import pipelines
import trainers


class ConfigError(Exception):
    pass


def _valid_keys(schema: type, dotted: str) -> str:
    """The keys beside a dotted key (`optim.lrr` -> the fields of OptimConfig)."""
    node = schema()
    for part in dotted.split(".")[:-1]:
        child = getattr(node, part, None)
        if not dataclasses.is_dataclass(child):
            break
        node = child
    return ", ".join(f.name for f in dataclasses.fields(node))


def read_yaml(path: str):
    """A YAML file as OmegaConf reads it; a missing file or anything but plain YAML is one line."""
    if not Path(path).is_file():
        raise ConfigError(f"config {path}: no such file")
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as err:  # also what a !!python/... tag gets: it is never constructed
        raise ConfigError(f"config {path}: not plain YAML ({str(err).splitlines()[0]})") from None


def load_config(
    schema: type, path: str | None, overrides: list[str], base: dict | None = None, where: str = ""
):
    """Merge the schema's defaults, the YAML file (or `base`, a step of an experiment file named by
    `where`) and the overrides; returns (object, resolved YAML)."""
    config = OmegaConf.structured(schema)
    sources = [] if base is None else [(where, lambda: OmegaConf.create(base))]
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config {path}: no such file")
        sources.append((path, lambda: read_yaml(path)))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not key=value (e.g. optim.lr=0.5)")
    sources.append(("the command line", lambda: OmegaConf.from_dotlist(overrides)))
    for where, read in sources:
        try:
            config = OmegaConf.merge(config, read())
        except ConfigKeyError as err:
            key = err.full_key or str(err.key)
            raise ConfigError(
                f"unknown config key {key!r} in {where}; valid keys here: {_valid_keys(schema, key)}"
            ) from None
        except yaml.YAMLError as err:  # also what a !!python/... tag gets: it is never constructed
            message = str(err).splitlines()[0]
            raise ConfigError(f"config {where}: not plain YAML ({message})") from None
        except OmegaConfBaseException as err:
            message = str(err).splitlines()[0]
            raise ConfigError(f"config {getattr(err, 'full_key', '') or ''} in {where}: {message}") from None
    try:
        resolved = OmegaConf.to_object(config)
    except MissingMandatoryValue as err:
        raise ConfigError(
            f"config {err.full_key} is required (set it in the YAML or as {err.full_key}=...)"
        ) from None
    return resolved, OmegaConf.to_yaml(config)


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(
            f"config {name}={value!r} is not valid; choose one of: {', '.join(map(str, valid))}"
        )


def validate_pretrain(cfg: trainers.PretrainConfig, check_paths: bool = True) -> None:
    """Check values, so a typo fails here and not an hour into a run.

    check_paths=False leaves out what needs the files (checking configs on a machine without the data).
    """
    _choice("precision", cfg.precision, ("bf16", "fp16", "fp32"))
    _choice("optim.name", cfg.optim.name, trainers.OPTIMIZERS)
    _choice("optim.lr_scaling", cfg.optim.lr_scaling, trainers.LR_SCALING)
    _choice("optim.schedule", cfg.optim.schedule, trainers.SCHEDULES)
    _choice("model.head", cfg.model.head, encoders.HEADS)
    _choice("data.preset", cfg.data.preset, list(pipelines.PRESETS))
    if cfg.model.encoder not in encoders.encoder_names():
        raise ConfigError(
            f"config model.encoder={cfg.model.encoder!r} is not valid; use small_cnn or a timm ResNet "
            "(resnet18, resnet34, resnet50, ...)"
        )
    if not 0 < cfg.temperature <= 1:
        raise ConfigError(f"config temperature={cfg.temperature} must be in (0, 1]")
    for name in (
        "epochs",
        "batch_size",
        "grad_accum",
        "keep_checkpoints",
        "checkpoint_every",
        "knn_every",
        "dist_timeout",
    ):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"config {name}={getattr(cfg, name)} must be at least 1")
    for name, value in (("optim.lr", cfg.optim.lr), ("online_probe_lr", cfg.online_probe_lr)):
        if value <= 0:
            raise ConfigError(f"config {name}={value} must be positive")
    if not 0 < cfg.data.fraction <= 1:
        raise ConfigError(f"config data.fraction={cfg.data.fraction} must be in (0, 1]")
    if cfg.optim.decay_epochs and cfg.optim.schedule != "step":
        raise ConfigError("config optim.decay_epochs needs optim.schedule=step")
    if (cfg.data.knn_bank is None) != (cfg.data.knn_val is None):
        raise ConfigError("config data.knn_bank and data.knn_val go together: set both (or neither)")
    try:
        pipelines.create_augment(cfg.data.preset, cfg.data.size, **cfg.data.augment)
    except pipelines.PipelineError as err:
        raise ConfigError(str(err)) from None
    if not check_paths:
        return
    if cfg.model.pretrained_file and not Path(cfg.model.pretrained_file).is_file():
        raise ConfigError(f"config model.pretrained_file={cfg.model.pretrained_file}: no such file")
    try:
        manifests = {
            folder: pipelines.shard_source(folder)[1]
            for folder in filter(None, (cfg.data.train, cfg.data.knn_bank, cfg.data.knn_val))
        }
    except pipelines.PipelineError as err:
        raise ConfigError(str(err)) from None
    if (
        cfg.data.knn_bank
        and manifests[cfg.data.knn_bank]["classes"] != manifests[cfg.data.knn_val]["classes"]
    ):
        raise ConfigError(
            f"config data.knn_bank={cfg.data.knn_bank} and data.knn_val={cfg.data.knn_val} hold other "
            "classes (shards of two datasets?); give the kNN monitor two splits of one dataset"
        )
