"""`fastclr linear | knn | cluster | finetune | supervised | evaluate | report`.

Each evaluation's options are made from its settings dataclass (`fastclr.trainers.LinearConfig`,
...): names, types, choices and help come from there, and an option left out is left out of the
parsed arguments (`argparse.SUPPRESS`), so the dataclass alone supplies the defaults. Each handler
imports the trainers (torch, DALI, timm, accelerate) only when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path

from fastclr.config import REQUIRED
from fastclr.launch._cli_common import say
from fastclr.launch._errors import ConfigError


def add_settings(p: argparse.ArgumentParser, schema: type) -> None:
    """One `--long-option` per field of `schema`: `bool` a switch, `list[int]` one or more values."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        kind, default = hints[f.name], f.default_factory() if f.default is dataclasses.MISSING else f.default
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # `float | None`: a float if given
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        unsaid = default is None or default is False or default == [] or default == REQUIRED
        shown = "" if unsaid else f" (default: {default})"
        options = {"help": f.metadata["help"] + shown, "default": argparse.SUPPRESS}
        if kind is bool:
            options["action"] = "store_true"
        elif typing.get_origin(kind) is list:
            options.update(nargs="+", type=typing.get_args(kind)[0])
        else:
            options.update(type=kind, choices=f.metadata["choices"], required=default == REQUIRED)
        p.add_argument(f"--{f.name.replace('_', '-')}", **options)


def config_from(schema: type, args: argparse.Namespace):
    """The settings object of the options given; the others keep the dataclass's defaults."""
    names = {f.name for f in dataclasses.fields(schema)}
    return schema(**{k: v for k, v in vars(args).items() if k in names})


def _linear(args: argparse.Namespace) -> dict:
    from fastclr import trainers

    cfg = config_from(trainers.LinearConfig, args)
    result = trainers.linear(cfg)
    if cfg.mode == "augmented":
        say(f"{cfg.head} probe (augmented): top-1 {result['top1']:.2%}; {cfg.out}/results.json")
    else:
        print(
            f"{cfg.head} probe: top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%} on "
            f"{result['val_samples']} images; {cfg.out}/results.json, confusion.png"
        )
    return result


def _knn(args: argparse.Namespace) -> dict:
    from fastclr import trainers

    cfg = config_from(trainers.KnnConfig, args)
    result = trainers.knn(cfg)
    print(
        f"{cfg.vote} kNN (k {cfg.k}): top-1 {result['top1']:.2%} on {result['val_samples']} images; "
        f"{cfg.out}/results.json"
    )
    return result


def _cluster(args: argparse.Namespace) -> dict:
    from fastclr import trainers

    cfg = config_from(trainers.ClusterConfig, args)
    result = trainers.cluster(cfg)
    print(
        f"{cfg.method} on {result['on']}: accuracy {result['top1']:.2%} (Hungarian-matched) on "
        f"{result['samples']} images; {cfg.out}/results.json"
    )
    return result


def _finetune(args: argparse.Namespace) -> dict:
    from fastclr import trainers

    cfg = config_from(trainers.FinetuneConfig, args)
    result = trainers.finetune(cfg)
    say(f"fine-tune ({cfg.mode}): top-1 {result['top1']:.2%}; {cfg.out}/results.json, metrics.jsonl")
    return result


def _supervised(args: argparse.Namespace) -> dict:
    from fastclr import trainers

    cfg = config_from(trainers.SupervisedConfig, args)
    result = trainers.supervised(cfg)
    say(
        f"supervised {cfg.model} ({result['parameters']:,} parameters): top-1 {result['top1']:.2%}; "
        f"{cfg.out}/results.json, metrics.jsonl"
    )
    return result


def _evaluate(args: argparse.Namespace) -> dict:
    from fastclr import trainers

    cfg = config_from(trainers.EvaluateConfig, args)
    result = trainers.evaluate(cfg)
    say(f"top-1 {result['top1']:.2%} on {cfg.val}; {cfg.out}/results.json")
    return result


# command -> (settings class in fastclr.trainers, handler, one line of help)
EVALUATIONS = {
    "linear": (
        "LinearConfig",
        _linear,
        "linear probe of a frozen encoder on cached features (top-1/5, confusion matrix)",
    ),
    "knn": (
        "KnnConfig",
        _knn,
        "kNN accuracy (weighted or majority vote) of an encoder on a train/val shard pair",
    ),
    "cluster": ("ClusterConfig", _cluster, "k-means / GMM accuracy on raw pixels or encoder features"),
    "finetune": (
        "FinetuneConfig",
        _finetune,
        "fine-tune a pretrained encoder with a new head (head-only or full)",
    ),
    "supervised": (
        "SupervisedConfig",
        _supervised,
        "supervised baseline: any timm model, Mixup/CutMix, label smoothing",
    ),
    "evaluate": (
        "EvaluateConfig",
        _evaluate,
        "top-1 of a saved finetune/supervised classifier on labelled shards",
    ),
}


def add_evaluations(commands: argparse._SubParsersAction) -> None:
    from fastclr import trainers  # the settings classes alone: no torch

    for name, (schema, run, help_text) in EVALUATIONS.items():
        schema = getattr(trainers, schema)
        p = commands.add_parser(name, help=help_text, description=schema.__doc__)
        add_settings(p, schema)
        p.set_defaults(run=run)


def _report(args: argparse.Namespace) -> None:
    from fastclr.launch._report import report

    if (args.tsne_encoder is None) != (args.tsne_data is None):
        raise ConfigError("--tsne-encoder and --tsne-data go together")
    try:
        path = report([Path(d) for d in args.dirs], Path(args.out), args.tsne_encoder, args.tsne_data)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    print(f"wrote {path}")


def add_report(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="markdown table over runs and evals, curves and a t-SNE map",
        description="Collect results.json and metrics.jsonl under the given directories.",
    )
    p.add_argument("dirs", nargs="+", help="run and evaluation directories (searched recursively)")
    p.add_argument("--out", required=True, help="folder for results.md and the PNGs")
    p.add_argument("--tsne-encoder", type=Path, help="encoder (run dir or file) for a t-SNE map of features")
    p.add_argument("--tsne-data", type=Path, help="labelled shards to embed")
    p.set_defaults(run=_report)
