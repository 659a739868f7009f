"""Settings: each command's options are one dataclass, and each field carries its default, help and choices.

    @dataclass
    class KnnConfig:
        encoder: str = setting(help="pretrain run directory or its encoder.safetensors")  # required
        k: int = setting(200, "neighbours that vote")
        vote: str = setting("weighted", "how they vote", choices=("weighted", "majority"))

        def check(self) -> None:  # ranges and rules between fields; raise ConfigError
            if self.k < 1:
                raise ConfigError(f"config k={self.k} must be at least 1")

The command line (`fastclr knn --k 10` or `fastclr knn k=10`), YAML files and experiment steps all
become such an object through one loader (`fastclr.launch`), which also lists the settings and their
defaults in `--help` and docs/config.md; Python users build the object directly. `check_settings`
is the one validation: required values, choices, then each (nested) dataclass's own `check()`.
A field whose default is another config dataclass is a group of settings (`optim.lr`).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

REQUIRED = "???"  # OmegaConf's mark of a value that must be given


class ConfigError(ValueError):
    """A setting that cannot work, phrased as what to set instead (one line)."""


def setting(default: Any = REQUIRED, help: str = "", choices: Sequence | None = None) -> Any:  # noqa: A002
    """A dataclass field with its help text and, if the value is one of a few names, their list."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting as `--help` and docs/config.md list it."""

    key: str  # dotted: `optim.lr`
    type: str  # as written in the dataclass: `int | None`
    default: Any  # REQUIRED when it must be given
    help: str
    choices: tuple | None
    hint: Any = None  # the type itself, for a parser

    @property
    def required(self) -> bool:
        return isinstance(self.default, str) and self.default == REQUIRED


@dataclasses.dataclass(frozen=True)
class Group:
    """A nested config dataclass (`optim`) and its help."""

    key: str
    help: str
    schema: type


def groups(schema: type, prefix: str = "") -> Iterator[Group]:
    """Every nested group of settings, depth first (`data`, `model`, ...)."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            yield Group(f"{prefix}{f.name}", f.metadata.get("help", ""), hints[f.name])
            yield from groups(hints[f.name], f"{prefix}{f.name}.")


def fields(schema: type, prefix: str = "") -> Iterator[Field]:
    """Every leaf setting of a config dataclass, nested groups flattened to dotted keys."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from fields(hint, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        yield Field(
            f"{prefix}{f.name}",
            type_name(hint),
            default,
            f.metadata.get("help", ""),
            f.metadata.get("choices"),
            hint,
        )


def type_name(hint) -> str:
    """`int`, `list[float]`, `str | None`: a type as it is written."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def check_settings(cfg: Any, prefix: str = "") -> None:
    """Refuse a required value left out or a name outside its choices, then run each `check()`."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_settings(value, f"{key}.")
            continue
        if isinstance(value, str) and value == REQUIRED:
            raise ConfigError(f"config {key} is required (e.g. {key}=... on the command line)")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"config {key}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}"
            )
    if hasattr(cfg, "check"):
        cfg.check()
