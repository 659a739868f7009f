"""YAML + `key=value` overrides -> a validated config object, before anything starts.

OmegaConf's structured mode refuses unknown keys; we rephrase its errors into
one line that names the key and the valid ones, then check values the schema's
types cannot (choices, ranges, that the shard folders exist).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from fastclr import encoders, pipelines, trainers
from fastclr.launch._errors import ConfigError


def _valid_keys(schema: type, dotted: str) -> str:
    """The keys beside a dotted key (`optim.lrr` -> the fields of OptimConfig)."""
    node = schema()
    for part in dotted.split(".")[:-1]:
        child = getattr(node, part, None)
        if not dataclasses.is_dataclass(child):
            break
        node = child
    return ", ".join(f.name for f in dataclasses.fields(node))


def check_text(override: str) -> None:
    """Configs are YAML text: a value holding bytes that are not UTF-8 (a file name's) cannot be one."""
    try:
        override.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"override {override!r} is not valid UTF-8 (a file name's bytes?); a config is YAML text, "
            "so rename the file or folder, or point to it through a symlink with a UTF-8 name"
        ) from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """`line N: what is wrong`, from PyYAML's error (its str() spans several lines)."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or problem is None:
        return str(err).splitlines()[0]
    if problem.startswith("found duplicate key "):
        problem = f"key {problem.removeprefix('found duplicate key ')!r} is given twice; keep one"
    return f"line {mark.line + 1}: {problem}"


def read_yaml(path: str):
    """A YAML file as OmegaConf reads it; a missing file or anything but plain YAML is one line."""
    if not Path(path).is_file():
        raise ConfigError(f"config {path}: no such file")
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as err:  # also what a !!python/... tag gets: it is never constructed
        raise ConfigError(f"config {path}: not plain YAML ({_yaml_problem(err)})") from None


# Free-form mappings of the schema whose keys are the fields of a dataclass elsewhere: their values
# are type-checked against it at load time (their names and ranges later, by the code that owns them).
KEYED_BY = {"data.augment": pipelines.Augment}


def _describe(hint) -> str:
    """How a value of type `hint` is written, for an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return f"a group of keys ({', '.join(f.name for f in dataclasses.fields(hint))})"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) if a is not type(None) else "null" for a in args)
    if origin is tuple:
        return f"a list of {len(args)} {'numbers' if float in args else 'values'}, e.g. [0.5, 1.0]"
    if origin is list:
        items, example = {int: ("integers", "[1, 2]"), float: ("numbers", "[0.1, 0.2]")}.get(
            args[0], ("strings", "[a, b]")
        )
        return f"a list of {items}, e.g. {example}"
    if origin is dict:
        return "a mapping, e.g. {key: value}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(hint, str(hint))


def _fits(value, hint) -> bool:
    """Whether `value` (as YAML gives it) converts to `hint` the way OmegaConf converts it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or (isinstance(value, str) and ("${" in value or value == "???")):
        return True  # interpolations are checked once resolved, ??? (required) when converted
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) if a is not type(None) else value is None for a in args)
    if dataclasses.is_dataclass(hint) or origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        if not isinstance(value, list) or (origin is tuple and len(value) != len(args)):
            return False
        items = args if origin is tuple else args * len(value)
        return all(_fits(v, a) for v, a in zip(value, items, strict=False))
    if isinstance(value, (dict, list)) or value is None:
        return False
    if hint is bool:
        return str(value).lower() in ("true", "false", "yes", "no", "on", "off", "y", "n", "1", "0")
    if hint in (int, float):
        if isinstance(value, bool):
            return False
        try:
            return float(value) == int(float(value)) if hint is int else bool(float(value) == float(value))
        except (TypeError, ValueError):
            return False
    return True


def check_types(schema: type, values: dict, where: str, prefix: str = "") -> None:
    """Refuse a value of the wrong type under a key of `schema`, naming the key and the type it takes.

    Unknown keys are left to the merge, which lists the valid ones."""
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            continue
        hint = hints[key]
        if not _fits(value, hint):
            shown = json.dumps(value) if isinstance(value, (dict, list)) else value
            raise ConfigError(f"config {dotted}={shown} in {where}: takes {_describe(hint)}")
        if dataclasses.is_dataclass(hint):
            check_types(hint, value, where, f"{dotted}.")
        elif dotted in KEYED_BY and isinstance(value, dict):
            check_types(KEYED_BY[dotted], value, where, f"{dotted}.")


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
    for override in overrides:
        check_text(override)
    sources.append(("the command line", lambda: OmegaConf.from_dotlist(overrides)))
    for where, read in sources:
        try:
            loaded = read()
            if isinstance(loaded, DictConfig):
                check_types(schema, OmegaConf.to_container(loaded), where)
            config = OmegaConf.merge(config, loaded)
        except ConfigKeyError as err:
            key = err.full_key or str(err.key)
            raise ConfigError(
                f"unknown config key {key!r} in {where}; valid keys here: {_valid_keys(schema, key)}"
            ) from None
        except yaml.YAMLError as err:  # also what a !!python/... tag gets: it is never constructed
            raise ConfigError(f"config {where}: not plain YAML ({_yaml_problem(err)})") from None
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
    _choice("compile_mode", cfg.compile_mode, trainers.COMPILE_MODES)
    if cfg.cuda_graphs:
        problem = trainers.graphs_problem(cfg.optim.name, cfg.precision, cfg.grad_accum, cfg.compile)
        if problem:
            raise ConfigError(f"config {problem}")
    _choice("data.augment_device", cfg.data.augment_device, pipelines.AUGMENT_DEVICES)
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
    if cfg.data.prefetch < 1 or (cfg.data.num_threads is not None and cfg.data.num_threads < 1):
        raise ConfigError(
            f"config data.prefetch={cfg.data.prefetch} and data.num_threads={cfg.data.num_threads} "
            "must be at least 1 (num_threads may be null: chosen by where the ops run)"
        )
    if cfg.epochs < cfg.optim.warmup_epochs:  # the rate would still be rising when the run ends
        raise ConfigError(
            f"config optim.warmup_epochs={cfg.optim.warmup_epochs:g} is more than epochs={cfg.epochs}, so "
            f"the run would never leave warm-up; refused: set optim.warmup_epochs={cfg.epochs / 10:g} "
            "(a tenth of the run, as 10 of 100) or raise epochs"
        )
    for name, value in (("optim.lr", cfg.optim.lr), ("online_probe_lr", cfg.online_probe_lr)):
        if value <= 0:
            raise ConfigError(f"config {name}={value} must be positive")
    if not 0 < cfg.data.fraction <= 1:
        raise ConfigError(f"config data.fraction={cfg.data.fraction} must be in (0, 1]")
    if cfg.data.views < 2:
        raise ConfigError(
            f"config data.views={cfg.data.views} must be at least 2 (each view's positives are the others)"
        )
    if cfg.data.small_views < 0:
        raise ConfigError(f"config data.small_views={cfg.data.small_views} must be 0 (none) or more")
    if cfg.data.small_views and not 0 < cfg.data.small_size < cfg.data.size:
        raise ConfigError(
            f"config data.small_size={cfg.data.small_size} must be in 1..data.size-1 ({cfg.data.size - 1})"
        )
    scale = cfg.data.small_crop_scale
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(
            f"config data.small_crop_scale={list(scale)} must be [min, max] with 0 < min <= max <= 1"
        )
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
