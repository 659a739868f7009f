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


def _linear_line(cfg, result: dict) -> str:
    if cfg.mode == "augmented":
        return f"{cfg.head} probe (augmented): top-1 {result['top1']:.2%}; {cfg.out}/results.json"
    return (
        f"{cfg.head} probe: top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%} on "
        f"{result['val_samples']} images; {cfg.out}/results.json, confusion.png"
    )


# command -> (settings class and trainer in fastclr.trainers, the summary line, one line of help)
EVALUATIONS = {
    "linear": (
        "LinearConfig",
        "linear",
        _linear_line,
        "linear probe of a frozen encoder on cached features (top-1/5, confusion matrix)",
    ),
    "knn": (
        "KnnConfig",
        "knn",
        lambda cfg, r: (
            f"{cfg.vote} kNN (k {cfg.k}): top-1 {r['top1']:.2%} on {r['val_samples']} images; "
            f"{cfg.out}/results.json"
        ),
        "kNN accuracy (weighted or majority vote) of an encoder on a train/val shard pair",
    ),
    "cluster": (
        "ClusterConfig",
        "cluster",
        lambda cfg, r: (
            f"{cfg.method} on {r['on']}: accuracy {r['top1']:.2%} (Hungarian-matched) on "
            f"{r['samples']} images; {cfg.out}/results.json"
        ),
        "k-means / GMM accuracy on raw pixels or encoder features",
    ),
    "finetune": (
        "FinetuneConfig",
        "finetune",
        lambda cfg, r: (
            f"fine-tune ({cfg.mode}): top-1 {r['top1']:.2%}; {cfg.out}/results.json, metrics.jsonl"
        ),
        "fine-tune a pretrained encoder with a new head (head-only or full)",
    ),
    "supervised": (
        "SupervisedConfig",
        "supervised",
        lambda cfg, r: (
            f"supervised {cfg.model} ({r['parameters']:,} parameters): top-1 {r['top1']:.2%}; "
            f"{cfg.out}/results.json, metrics.jsonl"
        ),
        "supervised baseline: any timm model, Mixup/CutMix, label smoothing",
    ),
    "evaluate": (
        "EvaluateConfig",
        "evaluate",
        lambda cfg, r: f"top-1 {r['top1']:.2%} on {cfg.val}; {cfg.out}/results.json",
        "top-1 of a saved finetune/supervised classifier on labelled shards",
    ),
}


def _evaluation(args: argparse.Namespace) -> dict:
    from fastclr import trainers

    schema, trainer, line, _ = EVALUATIONS[args.evaluation]
    cfg = config_from(getattr(trainers, schema), args)
    result = getattr(trainers, trainer)(cfg)
    say(line(cfg, result))
    return result


def add_evaluations(commands: argparse._SubParsersAction) -> None:
    from fastclr import trainers  # the settings classes alone: no torch

    for name, (schema, _, _, help_text) in EVALUATIONS.items():
        schema = getattr(trainers, schema)
        p = commands.add_parser(name, help=help_text, description=schema.__doc__)
        add_settings(p, schema)
        p.set_defaults(run=_evaluation, evaluation=name)


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
