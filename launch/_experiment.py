"""Experiment files: one YAML per experiment, its steps run in order by `fastclr run`.

    name: b1_resnet18_imagenet_init
    reproduces: B1                       # which experiment (docs/experiments.md)
    reported: 47.3% linear top-1         # what the original write-up measured
    data: shards                         # where the shard sets live (a mount of shared storage works)
    runs: runs/${name}                   # where every step writes
    steps:
      pretrain: {data: {train: "${data}/cifar10-train"}, run_dir: "${runs}/pretrain", ...}
      linear: {encoder: "${runs}/pretrain", train: ..., val: ..., out: "${runs}/linear"}

A step named after a command runs it (`command:` picks one for other names). A step's keys are
the settings of its command (`fastclr linear --help`, docs/config.md), exactly as on the command
line (`label_fraction: 0.1` is `--label-fraction 0.1`). Every step becomes its command's settings
object and is checked before the first one runs. `runs/.../experiment.json` records each finished
step with its settings (the step's keys as written, resolved): a rerun skips those, and refuses to
mix a step's results with other settings.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from fastclr import trainers
from fastclr.config import ConfigError, setting
from fastclr.files import write_atomic
from fastclr.launch._commands import Command, commands
from fastclr.launch._config import (
    COMMAND_LINE,
    as_pairs,
    load_settings,
    merge,
    read_yaml,
    unresolved,
)
from fastclr.launch._report import read_jsonl

RECORD = "experiment.json"


@dataclass
class ExperimentConfig:
    name: str = setting(help="the experiment's name (its file's name)")
    reproduces: str = setting("", "the experiment it reproduces (docs/experiments.md lists them)")
    reported: str = setting("", "the number the original experiment reported")
    data: str = setting("shards", "folder of the shard sets the steps read")
    weights: str = setting("weights", "folder of local pretrained weights files (nothing is downloaded)")
    runs: str = setting("runs/${name}", "folder every step writes into")
    grid: dict[str, list[Any]] = setting({}, "`fastclr sweep`'s default grid")
    steps: dict[str, Any] = setting({}, "step name -> the settings of its command")


@dataclass
class Step:
    name: str
    command: str
    settings: dict  # the step's resolved keys, as recorded in experiment.json
    config: Any  # the command's settings object, checked


def _has_steps(loaded) -> bool:
    """An experiment file (has `steps:`) rather than a plain pretrain config."""
    return isinstance(loaded, DictConfig) and "steps" in loaded


def load_pretrain(path: str | None, overrides: list = ()) -> trainers.PretrainConfig:
    """A checked pretrain config, from a plain pretrain YAML or an experiment file's pretrain step,
    with `key=value` overrides (strings or (key, value) pairs). The file is read and parsed once,
    here, whichever kind it is."""
    loaded = read_yaml(path) if path is not None else None
    if not _has_steps(loaded):
        step = OmegaConf.to_container(loaded) if loaded is not None else None
        return load_settings(trainers.PretrainConfig, overrides, step=step, where=str(path or ""))
    config = load_experiment(path, overrides, loaded)
    names = [name for name, step in config.steps.items() if step_command(name, step) == "pretrain"]
    if len(names) != 1:
        raise ConfigError(f"{path}: {len(names)} pretrain steps; run it with `fastclr run`")
    (step,) = build_steps(config, only=names)
    return step.config


def target(config: DictConfig, key: str) -> str:
    """Where `key=value` lands: top-level keys as is, `linear.epochs` in step `linear`, and anything
    else (`model.head`, `temperature`) in the pretrain step; so grids read like pretrain overrides."""
    first = key.split(".")[0]
    if key in ExperimentConfig.__dataclass_fields__ or first in ("steps", "grid"):
        return key  # `data=DIR` is the shard root; `data.preset` below is the pretrain step's
    if first in config.steps:
        return f"steps.{key}"
    pretrains = [name for name, step in config.steps.items() if step_command(name, step) == "pretrain"]
    if len(pretrains) == 1 and first in trainers.PretrainConfig.__dataclass_fields__:
        return f"steps.{pretrains[0]}.{key}"
    raise ConfigError(
        f"override {key!r} names no step or setting; use a top-level key "
        f"({', '.join(ExperimentConfig.__dataclass_fields__)}), a step ({', '.join(config.steps)}) "
        "or a pretrain key"
    )


def load_experiment(path: str, overrides: list = (), loaded: DictConfig | None = None) -> DictConfig:
    """The experiment file (`loaded`: already parsed) merged over its schema, with `key=value`
    overrides applied (unresolved)."""
    loaded = read_yaml(path) if loaded is None else loaded
    config = OmegaConf.structured(ExperimentConfig)
    merge(config, ExperimentConfig, OmegaConf.to_container(loaded), str(path))
    set_values(config, overrides)
    if not config.steps:
        raise ConfigError(f"config {path}: no steps; add a steps: section")
    return config


def set_values(config: DictConfig, overrides: list | dict) -> None:
    """Apply overrides (`key=value` strings, (key, value) pairs or a mapping) where `target` puts them."""
    for key, value in overrides.items() if isinstance(overrides, dict) else as_pairs(overrides):
        where = target(config, key)
        if "." not in where:  # a top-level key: typed by the schema (`runs={a: 1}` is refused)
            merge(config, ExperimentConfig, {key: value}, COMMAND_LINE)
            continue
        try:
            OmegaConf.update(config, where, value, merge=False, force_add=where.startswith("steps."))
        except OmegaConfBaseException as err:
            raise ConfigError(f"config {key}={value} in {COMMAND_LINE}: {str(err).splitlines()[0]}") from None


def step_command(name: str, step: Any) -> str:
    command = step.get("command", name) if isinstance(step, dict | DictConfig) else name
    known = [c for c in commands() if " " not in c and c not in ("run", "sweep", "report", "demo")]
    if command not in known:
        raise ConfigError(
            f"step {name!r} runs no fastclr command; name it after one or set command: ({', '.join(known)})"
        )
    return command


def resolve(config: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(config, resolve=True)
    except InterpolationResolutionError as err:
        raise ConfigError(unresolved(err)) from None
    except OmegaConfBaseException as err:
        cause = str(err.__cause__ or err).splitlines()[0].strip("\"'")
        raise ConfigError(f"config {getattr(err, 'full_key', '') or ''}: {cause}") from None


def build_steps(config: DictConfig, only: list[str] | None = None, check_paths: bool = True) -> list[Step]:
    """Every step made into its command's settings object and checked before any runs: a typo fails
    now, not after pretraining. check_paths=False skips what needs the data on disk (for checking
    configs on any machine); files a step reads from an earlier one are never looked at here."""
    resolved = resolve(config)
    names = list(resolved["steps"])
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ConfigError(f"no step {unknown[0]!r} in this config; its steps: {', '.join(names)}")
    steps = []
    for name in names:
        if only is not None and name not in only:
            continue
        settings = dict(resolved["steps"][name] or {})
        command = step_command(name, settings)
        settings.pop("command", None)
        entry = commands()[command]
        cfg = _step_settings(entry, name, settings)
        if command == "pretrain":
            if cfg.track.name is None:  # W&B names runs by folder: every step's would be "pretrain"
                cfg.track.name = f"{Path(resolved['runs']).name}-{name}"
            if check_paths:
                entry.check_files(cfg)
        steps.append(Step(name, command, settings, cfg))
    return steps


def _step_settings(entry: Command, name: str, settings: dict) -> Any:
    where = f"step {name}"
    try:
        return load_settings(entry.settings, step=settings, where=where)
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if where in message else f"{where}: {message}") from None


def read_record(runs: Path) -> dict:
    path = runs / RECORD
    return json.loads(path.read_text()) if path.is_file() else {"steps": {}}


def run_steps(config: DictConfig, steps: list[Step], say=print, argv: list[str] | None = None) -> dict | None:
    """Run the steps not yet recorded in runs/experiment.json; None if a pretrain was stopped (resume
    by running again). A recorded step with other settings is refused rather than silently mixed.
    `argv`: the command line that runs them, recorded in the manifests steps write."""
    resolved = resolve(config)
    runs = Path(resolved["runs"])
    record = read_record(runs)
    record.update({k: resolved[k] for k in ("name", "reproduces", "reported")})
    for step in steps:
        done = record["steps"].get(step.name)
        if done is not None:
            if done["settings"] != step.settings:
                changed = trainers.changed_keys(
                    trainers.flatten(done["settings"]), trainers.flatten(step.settings)
                )
                raise ConfigError(
                    f"{runs / RECORD}: step {step.name} finished with other settings "
                    f"({', '.join(changed)} differ); use another runs= folder "
                    "or delete that one"
                )
            say(f"[{resolved['name']}] {step.name}: done already ({_summary(done['result'])})")
            continue
        say(f"[{resolved['name']}] {step.name}: fastclr {step.command}")
        started = time.time()
        outcome = commands()[step.command].run(step.config, argv or ["fastclr", "run"])
        if step.command == "pretrain":
            if outcome["stopped"] is not None:
                return None
            result = _pretrain_result(Path(step.config.run_dir))
        else:
            result = _clean(outcome or {})
        result["seconds"] = round(time.time() - started, 1)
        record["steps"][step.name] = {"command": step.command, "settings": step.settings, "result": result}
        if os.environ.get("RANK", "0") == "0":
            runs.mkdir(parents=True, exist_ok=True)
            write_atomic(runs / RECORD, json.dumps(record, indent=1) + "\n")
    return record


def _pretrain_result(run_dir: Path) -> dict:
    metrics = run_dir / "metrics.jsonl"  # written by rank 0: other nodes may not see it
    epochs = [r for r in read_jsonl(metrics) if "epoch_loss" in r] if metrics.is_file() else []
    result = {"epochs": len(epochs), "loss": epochs[-1]["epoch_loss"] if epochs else None}
    knn = [r["knn_accuracy"] for r in epochs if "knn_accuracy" in r]
    if knn:
        result["knn"] = knn[-1]
    return result


def _clean(result: dict) -> dict:
    """The scalar figures of an evaluation's result (per-class tables stay in its results.json)."""
    keep = ("top1", "top5", "val_samples", "samples", "parameters")
    return {k: result[k] for k in keep if k in result}


def _summary(result: dict) -> str:
    parts = []
    for key in ("top1", "knn", "loss"):
        if result.get(key) is not None:
            parts.append(f"{key} {result[key]:.2%}" if key != "loss" else f"loss {result[key]:.4f}")
    return ", ".join(parts) or "no figures"
