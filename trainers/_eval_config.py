"""The evaluations' settings: one dataclass per command, the only home of its defaults, help and checks.

    from fastclr.trainers import KnnConfig, knn
    result = knn(KnnConfig(encoder="runs/pretrain", train="shards/train", val="shards/val", out="runs/knn"))

Each trainer (`linear`, `knn`, `cluster`, `finetune`, `supervised`, `evaluate`, `import_encoder`)
takes its object and first runs `fastclr.config.check_settings` on it: required values, choices,
then the class's `check()` (ranges, rules between fields). Field names are the command's options
with underscores (`--batch-size` is `batch_size`). This module imports no torch, so `--help` and
config loading stay quick.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastclr.config import ConfigError, setting

HEADS = ("linear", "mlp2")  # heads on encoder features; mlp2: two layers (configs/c1_*)
KNN_VOTES = ("weighted", "majority")
CLUSTER_METHODS = ("kmeans", "gmm")
FINETUNE_MODES = ("head", "full")
LINEAR_MODES = ("cached", "augmented")
LINEAR_LR = {"cached": 0.01, "augmented": 0.1}  # Adam on cached features; SGD on augmented views
CLASSIFIER_OPTIMIZERS = ("sgd", "adamw")  # sgd: momentum 0.9, nesterov


def _encoder():
    return setting(help="pretrain run directory or its encoder.safetensors")


def _trust_unhashed():
    return setting(
        False,
        "use an encoder.json that records no hashes (written by hand, or before fastclr hashed the "
        "description), unchecked; one whose hashes do not match is refused all the same",
    )


def _out(what: str = "results.json"):
    return setting(help=f"folder for {what}")


def _cpu():
    return setting(False, "stay on the CPU even with a GPU")


def _wandb():
    return setting(False, "log to Weights & Biases (offline without a login)")


def _tensorboard():
    return setting(False, "log to TensorBoard in the output folder")


def _at_least(cfg, name: str, low: float, above: bool = False) -> None:
    value = getattr(cfg, name)
    if value < low or (above and value == low):
        raise ConfigError(f"config {name}={value} must be {'above' if above else 'at least'} {low:g}")


@dataclass
class LinearConfig:
    """`fastclr linear`: a probe on a frozen encoder, on cached features or on augmented views."""

    encoder: str = _encoder()
    train: str = setting(
        help="labelled shards the probe learns from; for a label fraction, see label_fraction or "
        "`fastclr shards subset`"
    )
    val: str = setting(help="labelled shards to measure on")
    out: str = _out("results.json, confusion.png and the probe")
    mode: str = setting(
        "cached",
        "cached: features extracted once (seconds); augmented: the classic protocol, a head trained "
        "on augmented views of the frozen encoder",
        LINEAR_MODES,
    )
    head: str = setting("linear", "the probe", HEADS)
    preset: str = setting("basic", "augmented mode: train augmentations (pipelines.PRESETS)")
    label_fraction: float | None = setting(None, "train on this stratified, seeded fraction of the labels")
    epochs: int = setting(300, "cached: full-batch steps; augmented: epochs")
    lr: float | None = setting(None, "default: 0.01 (cached, Adam), 0.1 (augmented, SGD)")
    weight_decay: float = setting(1e-4, "L2 penalty of the probe")
    batch_size: int = setting(256, "images a batch (cached: of feature extraction)")
    seed: int = setting(0, "probe initialisation, label subset and augmentations")
    trust_unhashed: bool = _trust_unhashed()
    cpu: bool = _cpu()
    wandb: bool = _wandb()
    tensorboard: bool = _tensorboard()

    def learning_rate(self) -> float:
        """`lr`, or the mode's default when it is left out."""
        return LINEAR_LR[self.mode] if self.lr is None else self.lr

    def check(self) -> None:
        _at_least(self, "epochs", 1)
        _at_least(self, "batch_size", 1)
        _at_least(self, "weight_decay", 0)
        if self.lr is not None:
            _at_least(self, "lr", 0, above=True)
        if self.label_fraction is not None and not 0 < self.label_fraction <= 1:
            raise ConfigError(f"config label_fraction={self.label_fraction} out of range; use 0 < F <= 1")


@dataclass
class KnnConfig:
    """`fastclr knn`: kNN top-1 of a frozen encoder; `train` is the labelled bank, `val` the queries."""

    encoder: str = _encoder()
    train: str = setting(help="labelled shards the neighbours come from (the bank)")
    val: str = setting(help="labelled shards to classify")
    out: str = _out()
    k: int = setting(200, "neighbours that vote")
    temperature: float = setting(0.1, "weighted vote: each neighbour weighs exp(similarity / T)")
    vote: str = setting(
        "weighted",
        "weighted (ours: k 200, T 0.1) or majority (simclr-cifar10.py: k 10, vote majority)",
        KNN_VOTES,
    )
    batch_size: int = setting(256, "images a batch of feature extraction")
    trust_unhashed: bool = _trust_unhashed()
    cpu: bool = _cpu()
    wandb: bool = _wandb()
    tensorboard: bool = _tensorboard()

    def check(self) -> None:
        _at_least(self, "k", 1)
        _at_least(self, "temperature", 0, above=True)
        _at_least(self, "batch_size", 1)


@dataclass
class ClusterConfig:
    """`fastclr cluster`: one cluster per class on raw pixels or encoder features, Hungarian-matched."""

    data: str = setting(help="labelled shards")
    out: str = _out()
    method: str = setting(
        "kmeans", "k-means, or a Gaussian mixture with diagonal covariances", CLUSTER_METHODS
    )
    encoder: str | None = setting(None, "pretrain run directory or encoder.safetensors (default: raw pixels)")
    batch_size: int = setting(256, "images a batch of feature extraction")
    seed: int = setting(0, "the clustering's initialisation")
    trust_unhashed: bool = _trust_unhashed()
    cpu: bool = _cpu()
    wandb: bool = _wandb()
    tensorboard: bool = _tensorboard()

    def check(self) -> None:
        _at_least(self, "batch_size", 1)


def _check_training(cfg) -> None:
    """The rules `finetune` and `supervised` share."""
    _at_least(cfg, "epochs", 1)
    _at_least(cfg, "batch_size", 1)
    _at_least(cfg, "weight_decay", 0)
    if any(e < 1 for e in cfg.decay_epochs) or list(cfg.decay_epochs) != sorted(set(cfg.decay_epochs)):
        raise ConfigError(
            f"config decay_epochs={list(cfg.decay_epochs)} must be rising epochs from 1 (or [] for cosine)"
        )


@dataclass
class FinetuneConfig:
    """`fastclr finetune`: a pretrained encoder + a new head, head-only (encoder frozen) or full."""

    encoder: str = _encoder()
    train: str = setting(help="labelled shards to train on")
    val: str = setting(help="labelled shards to measure on (every epoch)")
    out: str = _out("results.json, metrics.jsonl and the classifier")
    mode: str = setting(
        "full", "head: the encoder frozen (in eval mode); full: everything trains", FINETUNE_MODES
    )
    head: str = setting("linear", "the new head", HEADS)
    lr_head: float = setting(0.1, "learning rate of the head")
    lr_backbone: float = setting(0.01, "learning rate of the encoder (mode full)")
    epochs: int = setting(30, "passes over train")
    batch_size: int = setting(128, "images a batch")
    optimizer: str = setting("sgd", "sgd (momentum 0.9, nesterov) or adamw", CLASSIFIER_OPTIMIZERS)
    weight_decay: float = setting(5e-4, "L2 penalty")
    decay_epochs: list[int] = setting([], "step decay x0.1 at these epochs; [] = cosine to 0 per step")
    preset: str = setting("basic", "train augmentations (pipelines.PRESETS)")
    seed: int = setting(0, "head initialisation and augmentations")
    trust_unhashed: bool = _trust_unhashed()
    cpu: bool = _cpu()
    wandb: bool = _wandb()
    tensorboard: bool = _tensorboard()

    def check(self) -> None:
        _check_training(self)
        _at_least(self, "lr_head", 0, above=True)
        _at_least(self, "lr_backbone", 0)


@dataclass
class SupervisedConfig:
    """`fastclr supervised`: a classifier trained on labels only, from scratch or local weights."""

    model: str = setting(help="small_cnn, resnet18/34/50, vgg11, vit_small_patch16_224, ...")
    size: int = setting(help="image side fed to the model")
    train: str = setting(help="labelled shards to train on")
    val: str = setting(help="labelled shards to measure on (every epoch)")
    out: str = _out("results.json, metrics.jsonl and the classifier")
    cifar_stem: bool = setting(False, "ResNets: 3x3 stride-1 first conv, no max-pool")
    pretrained_file: str | None = setting(None, "local weights to start from (nothing is downloaded)")
    lr: float = setting(0.1, "learning rate")
    epochs: int = setting(30, "passes over train")
    batch_size: int = setting(128, "images a batch")
    optimizer: str = setting("sgd", "sgd (momentum 0.9, nesterov) or adamw", CLASSIFIER_OPTIMIZERS)
    weight_decay: float = setting(5e-4, "L2 penalty")
    decay_epochs: list[int] = setting([], "step decay x0.1 at these epochs; [] = cosine to 0 per step")
    mixup: float = setting(0.0, "Mixup alpha (timm), 0 = off")
    cutmix: float = setting(0.0, "CutMix alpha (timm), 0 = off")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy")
    preset: str = setting("basic", "train augmentations (pipelines.PRESETS)")
    seed: int = setting(0, "initialisation and augmentations")
    cpu: bool = _cpu()
    wandb: bool = _wandb()
    tensorboard: bool = _tensorboard()

    def check(self) -> None:
        _check_training(self)
        _at_least(self, "size", 1)
        _at_least(self, "lr", 0, above=True)
        _at_least(self, "mixup", 0)
        _at_least(self, "cutmix", 0)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"config label_smoothing={self.label_smoothing} out of range; use 0 <= S < 1")


@dataclass
class EvaluateConfig:
    """`fastclr evaluate`: top-1 of a classifier that `finetune` or `supervised` saved."""

    model: str = setting(help="the out folder of `fastclr finetune` or `fastclr supervised`")
    val: str = setting(help="labelled shards of the classes it was trained on")
    out: str = _out("results.json and confusion.png")
    batch_size: int = setting(256, "images a batch")
    cpu: bool = _cpu()

    def check(self) -> None:
        _at_least(self, "batch_size", 1)


@dataclass
class ImportWeightsConfig:
    """`fastclr import-weights`: an encoder folder, as pretraining exports one, from a local weights file."""

    model: str = setting(help="resnet18, resnet34, resnet50, ... or small_cnn")
    file: str = setting(help="local .safetensors or .pth state dict (nothing is downloaded)")
    size: int = setting(help="image side the evaluations feed it")
    out: str = _out("encoder.safetensors and encoder.json")
    cifar_stem: bool = setting(False, "3x3 stride-1 first conv, no max-pool")
    channels: int = setting(3, "input channels (1 for digits and MNIST)")

    def check(self) -> None:
        _at_least(self, "size", 1)
        _at_least(self, "channels", 1)


@dataclass
class ExportTimmConfig:
    """`fastclr export-timm`: an encoder as a folder timm loads itself (`local-dir:`), weights and
    preprocessing together."""

    encoder: str = _encoder()
    out: str = _out("model.safetensors and config.json, timm's own folder layout")
