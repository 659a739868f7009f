"""One loader for every command: defaults <- YAML file <- experiment step <- command line -> an object.

Each source is merged into the command's settings dataclass with OmegaConf's structured merge
(unknown keys and wrong types refused), one setting at a time, so a refusal names the key, the
source (the file, `step NAME` or "the command line") and what the key takes, in one line instead of
OmegaConf's multi-line message. `fastclr.config.check_settings` then checks the values.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from fastclr.config import ConfigError, check_settings
from fastclr.trainers import DataConfig, PretrainConfig

__all__ = [
    "COMMAND_LINE",
    "ConfigError",
    "as_pairs",
    "check_pretrain_files",
    "check_text",
    "load_settings",
    "merge",
    "nest",
    "read_yaml",
    "split_override",
    "to_object",
    "unresolved",
]

COMMAND_LINE = "the command line"


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


def read_yaml(path: str | Path) -> DictConfig:
    """A YAML file of settings as OmegaConf reads it; a missing file or anything but plain YAML
    (a `!!python/...` tag is never constructed, a `!!set` or a date is no config value) is one line."""
    if not Path(path).is_file():
        raise ConfigError(f"config {path}: no such file")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path}: not plain YAML ({_yaml_problem(err)})") from None
    except OmegaConfBaseException as err:  # a value PyYAML made that no config holds
        raise ConfigError(
            f"config {path}: not plain YAML ({err.full_key}: {str(err).splitlines()[0]}; "
            "use text, numbers, true/false, lists and mappings)"
        ) from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config {path}: not a mapping of settings (key: value lines)")
    return loaded


def split_override(override: str) -> tuple[str, Any]:
    """`optim.lr=0.5` -> ("optim.lr", 0.5): the value typed as YAML types it ([a,b] a list, true a bool)."""
    check_text(override)
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value (e.g. optim.lr=0.5)")
    key, text = override.split("=", 1)
    return key, yaml_value(text, f"{key}={text}")


def yaml_value(text: str, shown: str) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        problem = _yaml_problem(err) if isinstance(err, yaml.YAMLError) else str(err).splitlines()[0]
        raise ConfigError(f"config {shown} in {COMMAND_LINE}: not a YAML value ({problem})") from None


def as_pairs(overrides: Iterable[str | tuple[str, Any]]) -> list[tuple[str, Any]]:
    """`key=value` strings (a library caller's) or (key, value) pairs (the CLI's) as pairs."""
    return [o if isinstance(o, tuple) else split_override(o) for o in overrides]


def nest(pairs: Iterable[tuple[str, Any]]) -> dict:
    """Dotted pairs as one nested mapping; a later pair wins, as later overrides do."""
    nested: dict = {}
    for key, value in pairs:
        *parents, last = key.split(".")
        node = nested
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return nested


def describe(hint) -> str:
    """How a value of type `hint` is written, for an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return f"a group of keys ({', '.join(f.name for f in dataclasses.fields(hint))})"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) if a is not type(None) else "null" for a in args)
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


def _shown(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _augment_parameters() -> dict[str, type]:
    from fastclr import pipelines

    return pipelines.augment_parameters()


# Free-form mappings whose keys are named elsewhere (name -> type): their values are typed as they
# are merged (their names and ranges later, by the code that owns them: the augmentation's ops).
KEYED_BY = {(DataConfig, "augment"): _augment_parameters}


def merge(config: DictConfig, schema: type, values: Mapping, where: str, prefix: str = "") -> None:
    """Merge `values` (plain, from `where`) into `config` (structured by `schema` at `prefix`), one
    setting at a time, so a refusal names its key; dashes in keys read as underscores."""
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        name = str(key).replace("-", "_")
        dotted, hint = f"{prefix}{name}", hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            merge(config, hint, value, where, f"{dotted}.")
            continue
        if (schema, name) in KEYED_BY and isinstance(value, Mapping):
            _check_keyed(KEYED_BY[schema, name](), value, where, f"{dotted}.")
        try:
            config.merge_with(nest([(dotted, value)]))
        except ConfigKeyError:
            raise ConfigError(
                f"unknown config key {dotted!r} in {where}; valid keys here: "
                f"{', '.join(f.name for f in dataclasses.fields(schema))}"
            ) from None
        except OmegaConfBaseException as err:
            problem = f"takes {describe(hint)}" if hint is not None else str(err).splitlines()[0]
            raise ConfigError(f"config {dotted}={_shown(value)} in {where}: {problem}") from None


def _check_keyed(hints: dict[str, type], values: Mapping, where: str, prefix: str) -> None:
    typed = OmegaConf.structured(dataclasses.make_dataclass("Keyed", list(hints.items())))
    for name, value in values.items():
        if name not in hints or (isinstance(value, str) and "${" in value):
            continue  # unknown names are the owner's to refuse; interpolations are typed once resolved
        try:
            OmegaConf.merge(typed, {name: value})
        except OmegaConfBaseException:
            raise ConfigError(
                f"config {prefix}{name}={_shown(value)} in {where}: takes {describe(hints[name])}"
            ) from None


def to_object(config: DictConfig, where: str = COMMAND_LINE) -> Any:
    """The settings object; a value left required or an interpolation that cannot resolve is one line."""
    try:
        return OmegaConf.to_object(config)
    except MissingMandatoryValue as err:
        extra = "" if where == COMMAND_LINE else f", or in {where}"
        raise ConfigError(
            f"config {err.full_key} is required (e.g. {err.full_key}=... on the command line{extra})"
        ) from None
    except InterpolationResolutionError as err:
        raise ConfigError(unresolved(err)) from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"config {err.full_key}: {str(err).splitlines()[0]}") from None


def unresolved(err: InterpolationResolutionError) -> str:
    """One line for a `${...}` that cannot be resolved: the key, the text as written and why, e.g.
    `config data.train=${oc.env:DATA}: cannot be resolved (Environment variable 'DATA' not found)`."""
    first = str(err).splitlines()[0]
    _, raised, cause = first.partition(" raised while resolving interpolation: ")
    cause = cause.strip('"') if raised else first
    written = getattr(err.child_node, "_value", lambda: None)() if err.child_node is not None else None
    if not isinstance(written, str):
        shown = err.full_key
    elif re.match(r"[\w.-]+=", written):  # a key=value of `fastclr run`'s or `sweep`'s command line
        shown = written
    else:
        shown = f"{err.full_key}={written}"
    return f"config {shown}: cannot be resolved ({cause}); set the variable or give the value itself"


def load_settings(
    schema: type,
    overrides: Iterable[str | tuple[str, Any]] = (),
    path: str | Path | None = None,
    step: Mapping | None = None,
    where: str = "",
) -> Any:
    """A checked `schema` object from its defaults, the YAML file at `path`, an experiment step's
    mapping (named `where`, e.g. "step linear") and the command line's `key=value` overrides."""
    config = OmegaConf.structured(schema)
    if path is not None:
        merge(config, schema, OmegaConf.to_container(read_yaml(path)), str(path))
    if step is not None:
        merge(config, schema, step, where)
    merge(config, schema, nest(as_pairs(overrides)), COMMAND_LINE)
    cfg = to_object(config, where or (str(path) if path is not None else COMMAND_LINE))
    check_settings(cfg)
    return cfg


def check_pretrain_files(cfg: PretrainConfig) -> None:
    """What of a pretrain config needs the disk, cheaply: each shard folder's manifest (no hashing:
    the loader checks the shards once when training starts) and the weights file."""
    from fastclr import shards

    if cfg.model.pretrained_file and not Path(cfg.model.pretrained_file).is_file():
        raise ConfigError(f"config model.pretrained_file={cfg.model.pretrained_file}: no such file")
    folders = [f for f in (cfg.data.train, cfg.data.knn_bank, cfg.data.knn_val) if f]
    manifests = {folder: shards.load_manifest(folder) for folder in folders}
    for folder, manifest in manifests.items():
        if manifest["num_samples"] == 0 or not manifest["shards"]:
            raise ConfigError(f"{folder}: the manifest lists no samples; nothing to read")
    cfg.data.check_channels(manifests[cfg.data.train]["image"]["channels"])
    bank, val = cfg.data.knn_bank, cfg.data.knn_val
    if bank and cfg.knn_every:
        for key, folder in (("knn_bank", bank), ("knn_val", val)):
            if not manifests[folder]["labeled"]:
                raise ConfigError(
                    f"config data.{key}={folder}: these shards have no labels, and the kNN monitor votes "
                    "with labels; give it a labelled split (or knn_every=0: no monitor)"
                )
        if manifests[bank]["classes"] != manifests[val]["classes"]:
            from fastclr.trainers import class_difference

            difference = class_difference(manifests[bank]["classes"], manifests[val]["classes"], bank, val)
            raise ConfigError(
                f"config data.knn_bank={bank} and data.knn_val={val} hold other classes ({difference}); "
                "give the kNN monitor two splits of one dataset"
            )
