"""Interim: the evaluations' settings and config-taking functions, until trainers/ exports its own.

The evaluation trainers are becoming `trainers.linear(cfg)`, `trainers.knn(cfg)`, ... with
`trainers.LinearConfig` etc. Until that lands this module holds the same names over today's
keyword functions, with today's defaults and help, so every command already runs from a settings
object. When trainers/ has them, delete this module (and launch/_cli_eval.py) and let
launch/_eval_commands.py take the names from `fastclr.trainers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastclr.config import setting
from fastclr.launch._cli_common import device

ENCODER = "pretrain run directory or its encoder.safetensors"
CPU = "stay on the CPU even with a GPU"
WANDB = "log to Weights & Biases (offline without a login)"
TENSORBOARD = "log to TensorBoard in the output folder"


@dataclass
class LinearConfig:
    encoder: str = setting(help=ENCODER)
    train: str = setting(
        help="labelled shards the probe learns from; for a label fraction see label_fraction"
    )
    val: str = setting(help="labelled shards to measure on")
    out: str = setting(help="folder for results.json")
    mode: str = setting(
        "cached",
        "cached: features extracted once (seconds); augmented: the classic protocol, a head trained "
        "on augmented views of the frozen encoder",
        choices=("cached", "augmented"),
    )
    head: str = setting("linear", "the probe", choices=("linear", "mlp2"))
    preset: str = setting("basic", "augmented mode: train augmentations")
    label_fraction: float | None = setting(None, "train on this stratified fraction of the labels")
    epochs: int = setting(300, "cached: full-batch steps; augmented: epochs")
    lr: float | None = setting(None, "null: 0.01 (cached, Adam), 0.1 (augmented, SGD)")
    weight_decay: float = setting(1e-4, "weight decay of the probe")
    batch_size: int = setting(256, "images per batch")
    seed: int = setting(0, "seed of the probe (and of the label subset)")
    cpu: bool = setting(False, CPU)
    wandb: bool = setting(False, WANDB)
    tensorboard: bool = setting(False, TENSORBOARD)


@dataclass
class KnnConfig:
    encoder: str = setting(help=ENCODER)
    train: str = setting(help="labelled shards of the bank")
    val: str = setting(help="labelled shards to measure on")
    out: str = setting(help="folder for results.json")
    k: int = setting(200, "neighbours that vote")
    temperature: float = setting(0.1, "weighted vote: exp(similarity/T)")
    vote: str = setting(
        "weighted",
        "weighted (ours: k 200, T 0.1) or majority (simclr-cifar10.py: --k 10 --vote majority)",
        choices=("weighted", "majority"),
    )
    batch_size: int = setting(256, "images per batch")
    cpu: bool = setting(False, CPU)
    wandb: bool = setting(False, WANDB)
    tensorboard: bool = setting(False, TENSORBOARD)


@dataclass
class ClusterConfig:
    data: str = setting(help="labelled shards")
    out: str = setting(help="folder for results.json")
    method: str = setting("kmeans", "k-means or a diagonal Gaussian mixture", choices=("kmeans", "gmm"))
    encoder: str | None = setting(None, "pretrain run directory or encoder.safetensors; null: raw pixels")
    batch_size: int = setting(256, "images per batch")
    seed: int = setting(0, "seed of the clustering")
    cpu: bool = setting(False, CPU)
    wandb: bool = setting(False, WANDB)
    tensorboard: bool = setting(False, TENSORBOARD)


@dataclass
class _Training:
    train: str = setting(help="labelled shards to train on")
    val: str = setting(help="labelled shards to measure on (every epoch)")
    out: str = setting(help="folder for results.json and metrics.jsonl")
    epochs: int = setting(30, "epochs")
    batch_size: int = setting(128, "images per batch")
    preset: str = setting("basic", "train augmentations (pipelines.PRESETS)")
    weight_decay: float = setting(5e-4, "weight decay")
    decay_epochs: list[int] | None = setting(None, "step decay x0.1 at these epochs; null: cosine")
    seed: int = setting(0, "seed")
    cpu: bool = setting(False, CPU)
    wandb: bool = setting(False, WANDB)
    tensorboard: bool = setting(False, TENSORBOARD)


@dataclass
class FinetuneConfig(_Training):
    encoder: str = setting(help=ENCODER)
    mode: str = setting("full", "head: encoder frozen; full: everything trains", choices=("head", "full"))
    head: str = setting("linear", "the new head", choices=("linear", "mlp2"))
    lr_head: float = setting(0.1, "learning rate of the head")
    lr_backbone: float = setting(0.01, "learning rate of the encoder (mode full)")


@dataclass
class SupervisedConfig(_Training):
    model: str = setting(help="small_cnn, resnet18/34/50, vgg11, vit_small_patch16_224, ...")
    size: int = setting(help="image side fed to the model")
    cifar_stem: bool = setting(False, "ResNets: 3x3 stride-1 first conv, no max-pool")
    pretrained_file: str | None = setting(None, "local weights to start from (nothing is downloaded)")
    lr: float = setting(0.1, "learning rate")
    mixup: float = setting(0.0, "Mixup alpha (timm), 0 = off")
    cutmix: float = setting(0.0, "CutMix alpha (timm), 0 = off")
    label_smoothing: float = setting(0.0, "label smoothing")


@dataclass
class EvaluateConfig:
    model: str = setting(help="the out folder of `fastclr finetune` or `fastclr supervised`")
    val: str = setting(help="labelled shards of the classes it was trained on")
    out: str = setting(help="folder for results.json")
    batch_size: int = setting(256, "images per batch")
    cpu: bool = setting(False, CPU)


@dataclass
class ImportWeightsConfig:
    model: str = setting(help="resnet18, resnet34, resnet50, ... or small_cnn")
    file: str = setting(help="local .safetensors or .pth state dict")
    size: int = setting(help="image side the evaluations feed it")
    out: str = setting(help="folder for encoder.safetensors and encoder.json")
    cifar_stem: bool = setting(False, "3x3 stride-1 first conv, no max-pool")
    channels: int = setting(3, "input channels")


def _tracking(cfg) -> dict:
    return {"wandb": cfg.wandb, "tensorboard": cfg.tensorboard}


def linear(cfg: LinearConfig) -> dict:
    from fastclr import shards, trainers

    trainers.check_inputs(cfg.out, cfg.encoder, cfg.train, cfg.val)  # before making a subset
    train = cfg.train
    if cfg.label_fraction is not None:  # a stratified, seeded subset of the labels, kept beside the results
        train = Path(cfg.out) / f"train-{cfg.label_fraction:g}"
        shards.subset(cfg.train, train, fraction=cfg.label_fraction, seed=cfg.seed, overwrite=True)
    if cfg.mode == "augmented":  # the classic protocol: a frozen encoder, a head trained on augmented views
        return trainers.finetune(
            cfg.encoder, train, cfg.val, cfg.out, mode="head", head=cfg.head, epochs=cfg.epochs,
            lr_head=cfg.lr or 0.1, batch_size=cfg.batch_size, preset=cfg.preset,
            weight_decay=cfg.weight_decay, seed=cfg.seed, cpu=cfg.cpu, **_tracking(cfg),
        )  # fmt: skip
    return trainers.linear_eval(
        cfg.encoder, train, cfg.val, cfg.out, epochs=cfg.epochs, lr=cfg.lr or 0.01,
        weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=cfg.seed, device=device(cfg.cpu),
        head=cfg.head, **_tracking(cfg),
    )  # fmt: skip


def knn(cfg: KnnConfig) -> dict:
    from fastclr import trainers

    return trainers.knn_eval(
        cfg.encoder, cfg.train, cfg.val, cfg.out, k=cfg.k, temperature=cfg.temperature,
        batch_size=cfg.batch_size, device=device(cfg.cpu), vote=cfg.vote, **_tracking(cfg),
    )  # fmt: skip


def cluster(cfg: ClusterConfig) -> dict:
    from fastclr import trainers

    return trainers.cluster_eval(
        cfg.data, cfg.out, method=cfg.method, encoder_path=cfg.encoder, batch_size=cfg.batch_size,
        seed=cfg.seed, device=device(cfg.cpu), **_tracking(cfg),
    )  # fmt: skip


def finetune(cfg: FinetuneConfig) -> dict:
    from fastclr import trainers

    return trainers.finetune(
        cfg.encoder, cfg.train, cfg.val, cfg.out, mode=cfg.mode, head=cfg.head, epochs=cfg.epochs,
        lr_head=cfg.lr_head, lr_backbone=cfg.lr_backbone, batch_size=cfg.batch_size, preset=cfg.preset,
        weight_decay=cfg.weight_decay, decay_epochs=cfg.decay_epochs, seed=cfg.seed, cpu=cfg.cpu,
        **_tracking(cfg),
    )  # fmt: skip


def supervised(cfg: SupervisedConfig) -> dict:
    from fastclr import trainers

    return trainers.supervised(
        cfg.model, cfg.train, cfg.val, cfg.out, size=cfg.size, epochs=cfg.epochs, lr=cfg.lr,
        batch_size=cfg.batch_size, cifar_stem=cfg.cifar_stem, pretrained_file=cfg.pretrained_file,
        mixup=cfg.mixup, cutmix=cfg.cutmix, label_smoothing=cfg.label_smoothing, preset=cfg.preset,
        weight_decay=cfg.weight_decay, decay_epochs=cfg.decay_epochs, seed=cfg.seed, cpu=cfg.cpu,
        **_tracking(cfg),
    )  # fmt: skip


def evaluate(cfg: EvaluateConfig) -> dict:
    from fastclr import trainers

    return trainers.evaluate(cfg.model, cfg.val, cfg.out, batch_size=cfg.batch_size, cpu=cfg.cpu)


def import_weights(cfg: ImportWeightsConfig) -> tuple[Path, dict]:
    from fastclr import trainers

    return trainers.import_encoder(cfg.model, cfg.file, cfg.out, cfg.size, cfg.cifar_stem, cfg.channels)
