"""`fastclr linear | knn | cluster | finetune | supervised | evaluate | import-weights | export-timm`.

Each runs the trainer's config-taking function and prints its summary line; the trainers (torch,
DALI, timm, accelerate) are imported only when a command runs.
"""

from __future__ import annotations

import json

from fastclr import trainers as evaluations  # names load when used: the settings classes import no torch
from fastclr.launch._cli_common import say
from fastclr.launch._commands import Command, register


def _linear(cfg, argv: list[str]) -> dict:
    result = evaluations.linear(cfg)
    if cfg.mode == "augmented":
        say(f"{cfg.head} probe (augmented): top-1 {result['top1']:.2%}; {cfg.out}/results.json")
    else:
        print(
            f"{cfg.head} probe: top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%} on "
            f"{result['val_samples']} images; {cfg.out}/results.json, confusion.png"
        )
    return result


def _knn(cfg, argv: list[str]) -> dict:
    result = evaluations.knn(cfg)
    print(
        f"{cfg.vote} kNN (k {result['k']}): top-1 {result['top1']:.2%} on {result['val_samples']} images; "
        f"{cfg.out}/results.json"
    )
    return result


def _cluster(cfg, argv: list[str]) -> dict:
    result = evaluations.cluster(cfg)
    print(
        f"{cfg.method} on {result['on']}: accuracy {result['top1']:.2%} (Hungarian-matched) on "
        f"{result['samples']} images; {cfg.out}/results.json"
    )
    return result


def _finetune(cfg, argv: list[str]) -> dict:
    result = evaluations.finetune(cfg)
    say(f"fine-tune ({cfg.mode}): top-1 {result['top1']:.2%}; {cfg.out}/results.json, metrics.jsonl")
    return result


def _supervised(cfg, argv: list[str]) -> dict:
    result = evaluations.supervised(cfg)
    say(
        f"supervised {cfg.model} ({result['parameters']:,} parameters): top-1 {result['top1']:.2%}; "
        f"{cfg.out}/results.json, metrics.jsonl"
    )
    return result


def _evaluate(cfg, argv: list[str]) -> dict:
    result = evaluations.evaluate(cfg)
    say(f"top-1 {result['top1']:.2%} on {cfg.val}; {cfg.out}/results.json")
    return result


def _import_weights(cfg, argv: list[str]) -> None:
    path, report = evaluations.import_encoder(cfg)
    say(
        f"{path}: {cfg.model} from {cfg.file}; {len(report['loaded'])} tensors loaded, not matched: "
        f"{report['missing'] + report['shape_mismatch'] or 'none'}"
    )


def _export_timm(cfg, argv: list[str]) -> None:
    config = evaluations.export_timm(cfg)
    say(
        f"{config.parent}: timm loads it with timm.create_model('local-dir:{config.parent}', pretrained=True)"
    )
    stem = json.loads(config.read_text())["fastclr"].get("load")
    if stem:
        say(f"its CIFAR stem: {stem}")


for command in (
    Command(
        "linear",
        evaluations.LinearConfig,
        _linear,
        "linear probe of a frozen encoder on cached features (top-1/5, confusion matrix)",
    ),
    Command(
        "knn",
        evaluations.KnnConfig,
        _knn,
        "kNN accuracy (weighted or majority vote) of an encoder on a train/val shard pair",
    ),
    Command(
        "cluster",
        evaluations.ClusterConfig,
        _cluster,
        "k-means / GMM accuracy on raw pixels or encoder features",
        description="One cluster per class on L2-normalised raw pixels or encoder features; accuracy "
        "after Hungarian matching of clusters to classes.",
    ),
    Command(
        "finetune",
        evaluations.FinetuneConfig,
        _finetune,
        "fine-tune a pretrained encoder with a new head (head-only or full)",
    ),
    Command(
        "supervised",
        evaluations.SupervisedConfig,
        _supervised,
        "supervised baseline: any timm model, Mixup/CutMix, label smoothing",
        description="A classifier trained on labels only (from scratch or a local weights file).",
    ),
    Command(
        "evaluate",
        evaluations.EvaluateConfig,
        _evaluate,
        "top-1 of a saved finetune/supervised classifier on labelled shards",
    ),
    Command(
        "import-weights",
        evaluations.ImportWeightsConfig,
        _import_weights,
        "an encoder folder from a local torchvision/timm weights file (ImageNet baselines)",
        description="Writes encoder.safetensors + encoder.json, so `fastclr linear` and `fastclr "
        "finetune` evaluate e.g. an ImageNet-supervised ResNet. Nothing is downloaded.",
    ),
    Command(
        "export-timm",
        evaluations.ExportTimmConfig,
        _export_timm,
        "an encoder as a folder timm loads itself: timm.create_model('local-dir:OUT', pretrained=True)",
        description="Writes model.safetensors and config.json (timm's save_for_hf layout) with the "
        "preprocessing (size, mean, std, crop) in its pretrained_cfg, so timm.data.resolve_data_config "
        "and create_transform feed it as fastclr's evaluations do. docs/encoder.md: every way to use "
        "an encoder.",
    ),
):
    register(command)
