"""The commands of `fastclr`: one entry each, the one list the CLI, experiment steps and the docs read.

    register(Command("knn", KnnConfig, run_knn, "kNN accuracy of an encoder on a train/val pair"))

An entry names the settings dataclass (its fields are the command's options: `fastclr knn --k 10`,
`k=10`, or `k: 10` in an experiment step) and the function that runs an object of it. The
registering modules import no torch, DALI, timm or accelerate: each function imports them when it
runs, so `--help` answers at once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The modules whose import registers the commands, in the order `fastclr --help` lists them.
MODULES = ("_cli_shards", "_cli_train", "_eval_commands")


@dataclass(frozen=True)
class Command:
    """One `fastclr` command.

    Attributes:
        name: as typed after `fastclr`: `pretrain`, `shards convert`.
        settings: the dataclass of its settings, declared with `fastclr.config.setting`.
        run: `run(settings, argv)`: does the work; `argv` is the command line as typed (recorded in
            the manifests it writes). Returns the result an experiment step records (a dict), or None.
        help: one line, for `fastclr --help` and docs/config.md.
        description: more for the command's `--help` (how to launch it, ...).
        positional: settings that may also be given by position (`fastclr shards verify DIR`);
            a list-typed one takes every remaining argument.
        free_keys: a list setting that collects the `key=value` settings the dataclass does not
            know (an experiment's: `fastclr run ... optim.lr=0.5` or `--optim.lr 0.5`).
        yaml: takes `--config FILE`, a YAML file of its settings (command-line keys override it).
        load: `load(config_file, pairs)` in place of the plain loader (pretrain also reads an
            experiment file's pretrain step).
        check_files: the cheap check of what the settings name on disk, run before `run` (and by
            `fastclr run` before the first step).
    """

    name: str
    settings: type
    run: Callable[[Any, list[str]], Any]
    help: str
    description: str = ""
    positional: tuple[str, ...] = ()
    free_keys: str | None = None
    yaml: bool = False
    load: Callable[[str | None, list], Any] | None = None
    check_files: Callable[[Any], None] | None = None


_REGISTRY: dict[str, Command] = {}


def register(command: Command) -> Command:
    if command.name in _REGISTRY:
        raise ValueError(f"command {command.name!r} is registered twice")
    _REGISTRY[command.name] = command
    return command


def commands() -> dict[str, Command]:
    """Every command by name, in registration order."""
    for module in MODULES:
        importlib.import_module(f"fastclr.launch.{module}")
    return dict(_REGISTRY)


def get(name: str) -> Command:
    """The command named `name` (`pretrain`, `shards convert`); unknown names list the valid ones."""
    from fastclr.config import ConfigError

    known = commands()
    if name not in known:
        raise ConfigError(f"no command {name!r}; commands: {', '.join(known)}")
    return known[name]
