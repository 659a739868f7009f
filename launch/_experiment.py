"""Experiment files: one YAML per experiment, its steps run in order by `fastclr run`.

    name: b1_resnet18_imagenet_init
    reproduces: B1                       # row of EXPERIMENTS.md
    reported: 47.3% linear top-1         # what the original write-up measured
    data: shards                         # where the shard sets live (a mount of shared storage works)
    runs: runs/${name}                   # where every step writes
    steps:
      pretrain: {data: {train: "${data}/cifar10-train"}, run_dir: "${runs}/pretrain", ...}
      linear: {encoder: "${runs}/pretrain", train: ..., val: ..., out: "${runs}/linear"}

A step named after a command runs it (`command:` picks one for other names). The
pretrain step takes the pretrain schema's keys; every other step takes the long
options of its command (`label_fraction: 0.1` is `--label-fraction 0.1`), so a
step is exactly a command line a user could type. `runs/.../experiment.json`
records each finished step with its settings: a rerun skips those, and refuses
to mix a step's results with other settings.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fastclr import trainers
from fastclr.launch._config import (
    ConfigError,
    check_text,
    check_types,
    load_config,
    read_yaml,
    validate_pretrain,
)
from fastclr.launch._report import read_jsonl

STEP_COMMANDS = (
    "pretrain",
    "linear",
    "knn",
    "cluster",
    "finetune",
    "supervised",
    "evaluate",
    "import-weights",
)
RECORD = "experiment.json"


@dataclass
class ExperimentConfig:
    name: str = "???"
    reproduces: str = ""  # the row of EXPERIMENTS.md it reproduces
    reported: str = ""  # the number the original experiment reported
    data: str = "shards"  # folder of the shard sets the steps read
    weights: str = "weights"  # folder of local pretrained weights files (nothing is downloaded)
    runs: str = "runs/${name}"  # folder every step writes into
    grid: dict[str, list[Any]] = field(default_factory=dict)  # `fastclr sweep`'s default grid
    steps: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    name: str
    command: str
    settings: dict  # the step's resolved keys, as recorded in experiment.json
    args: argparse.Namespace | None  # parsed command line (every command but pretrain)
    pretrain: trainers.PretrainConfig | None  # the validated config of a pretrain step
    pretrain_yaml: str = ""


def _has_steps(loaded) -> bool:
    """An experiment file (has `steps:`) rather than a plain pretrain config."""
    return isinstance(loaded, DictConfig) and "steps" in loaded


def load_pretrain(path: str | None, overrides: list[str]) -> tuple[trainers.PretrainConfig, str]:
    """A validated pretrain config, from a plain pretrain YAML or an experiment file's pretrain step.

    The file is read and parsed once, here, whichever kind it is."""
    loaded = read_yaml(path) if path is not None else None
    if not _has_steps(loaded):
        cfg, text = load_config(trainers.PretrainConfig, None, overrides, base=loaded, where=str(path))
        validate_pretrain(cfg)
        return cfg, text
    config = load_experiment(path, overrides, loaded)
    names = [name for name, step in config.steps.items() if step_command(name, step) == "pretrain"]
    if len(names) != 1:
        raise ConfigError(f"{path}: {len(names)} pretrain steps; run it with `fastclr run`")
    (step,) = build_steps(config, parser=None, only=names)
    return step.pretrain, step.pretrain_yaml


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


def load_experiment(path: str, overrides: list[str] = (), loaded: DictConfig | None = None) -> DictConfig:
    """The experiment file (`loaded`: already parsed) merged over its schema, with `key=value`
    overrides applied (unresolved)."""
    loaded = read_yaml(path) if loaded is None else loaded
    if isinstance(loaded, DictConfig):
        check_types(ExperimentConfig, OmegaConf.to_container(loaded), str(path))
    try:
        config = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), loaded)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        raise ConfigError(
            f"config {path}: {key + ': ' if key else ''}{str(err).splitlines()[0]}; "
            f"top-level keys: {', '.join(ExperimentConfig.__dataclass_fields__)}"
        ) from None
    set_values(config, overrides)
    if not config.steps:
        raise ConfigError(f"config {path}: no steps; add a steps: section")
    return config


def set_values(config: DictConfig, overrides: list[str] | dict) -> None:
    pairs = overrides.items() if isinstance(overrides, dict) else [split_override(o) for o in overrides]
    for key, value in pairs:
        where = target(config, key)
        if "." not in where:  # a top-level key: `runs={a: 1}` is refused naming the type it takes
            plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            check_types(ExperimentConfig, {key: plain}, "the command line")
        try:
            OmegaConf.update(config, where, value, merge=False, force_add=where.startswith("steps."))
        except OmegaConfBaseException as err:
            raise ConfigError(
                f"config {key}={value} in the command line: {str(err).splitlines()[0]}"
            ) from None


def split_override(override: str) -> tuple[str, Any]:
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value (e.g. optim.lr=0.5)")
    check_text(override)
    key, text = override.split("=", 1)
    return key, OmegaConf.from_dotlist([f"v={text}"]).v  # YAML typing: 0.5 float, [a,b] list, true bool


def step_command(name: str, step: Any) -> str:
    command = step.get("command", name) if isinstance(step, dict | DictConfig) else name
    if command not in STEP_COMMANDS:
        raise ConfigError(
            f"step {name!r} runs no fastclr command; name it after one or set command: "
            f"({', '.join(STEP_COMMANDS)})"
        )
    return command


def resolve(config: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config: {str(err).splitlines()[0]}") from None


def build_steps(
    config: DictConfig,
    parser: argparse.ArgumentParser | None,
    only: list[str] | None = None,
    check_paths=True,
) -> list[Step]:
    """Every step parsed and validated before any runs: a typo fails now, not after pretraining.

    `parser` (the fastclr command's) parses every step but pretrain's.

    check_paths=False skips what needs the data on disk (for checking configs on any machine).
    """
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
        if command == "pretrain":
            cfg, text = load_config(trainers.PretrainConfig, None, [], base=settings, where=f"step {name}")
            validate_pretrain(cfg, check_paths=check_paths)
            if cfg.track.name is None:  # W&B names runs by folder: every step's would be "pretrain"
                cfg.track.name = f"{Path(resolved['runs']).name}-{name}"
            steps.append(Step(name, command, settings, None, cfg, text))
        else:
            steps.append(Step(name, command, settings, _parse(parser, name, command, settings), None))
    return steps


def _parse(parser: argparse.ArgumentParser, name: str, command: str, settings: dict) -> argparse.Namespace:
    """The step's keys as the command's long options, parsed by the command's own parser."""
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[command]
    options = {a.dest: a for a in sub._actions if a.option_strings}
    argv = [command]
    for key, value in settings.items():
        action = options.get(key.replace("-", "_"))
        if action is None or key == "help":
            valid = ", ".join(sorted(d for d in options if d != "help"))
            raise ConfigError(f"step {name}: {key!r} is no option of `fastclr {command}`; valid: {valid}")
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif value is not None:
            argv += [flag, str(value)]

    def refuse(message: str):
        raise ConfigError(f"step {name} (fastclr {command}): {message}")

    sub.error = refuse  # argparse would print usage and exit; a config error is one line
    args = parser.parse_args(argv)
    args.argv = ["fastclr", *argv]
    return args


def read_record(runs: Path) -> dict:
    path = runs / RECORD
    return json.loads(path.read_text()) if path.is_file() else {"steps": {}}


def run_steps(config: DictConfig, steps: list[Step], say=print) -> dict | None:
    """Run the steps not yet recorded in runs/experiment.json; None if a pretrain was stopped (resume
    by running again). A recorded step with other settings is refused rather than silently mixed."""
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
        if step.command == "pretrain":
            summary = trainers.pretrain(step.pretrain)
            if summary["stopped"] is not None:
                return None
            result = _pretrain_result(Path(step.pretrain.run_dir))
        else:
            result = _clean(step.args.run(step.args) or {})
        result["seconds"] = round(time.time() - started, 1)
        record["steps"][step.name] = {"command": step.command, "settings": step.settings, "result": result}
        if os.environ.get("RANK", "0") == "0":
            runs.mkdir(parents=True, exist_ok=True)
            tmp = runs / f".{RECORD}.tmp"
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(runs / RECORD)
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
