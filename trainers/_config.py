"""The pretrain settings: one dataclass per group, every hyperparameter a named field with its help.

launch/ loads YAML, experiment steps and the command line into these with OmegaConf (unknown
keys refused); `fastclr.config.check_settings(cfg)` checks the values (each group's `check()`);
trainers only read the resulting objects. Importing this module imports no torch: the names
that only torch's side knows (encoder names, augmentation parameters, CUDA-graph rules) are
checked by importing it inside `check()`, and the choices below are spelled here so `--help`
stays light (a test holds them equal to the modules that own them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fastclr.config import ConfigError, setting

DTYPES = ("bf16", "fp16", "fp32")  # trainers._setup.INPUT_DTYPE
PRECISIONS = ("auto", *DTYPES)  # auto: chosen by the device (chosen_precision)
OPTIMIZERS = ("lars", "lars_timm", "sgd", "adam", "adamw", "lamb")  # trainers._optim
LR_SCALING = ("none", "linear", "sqrt")
SCHEDULES = ("cosine", "step")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
HEADS = ("mlp_bn", "mlp_no_bn", "linear", "none")  # encoders.HEADS
PRESETS = ("simclr", "basic", "color", "gray", "strong", "digits")  # pipelines.PRESETS
AUGMENT_DEVICES = ("auto", "gpu", "cpu")  # pipelines.AUGMENT_DEVICES


def _at_least(cfg: Any, prefix: str, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ConfigError(f"config {prefix}{name}={value} must be at least {minimum}")


@dataclass
class DataConfig:
    train: str = setting(help="shard folder to pretrain on (labels unused)")
    fraction: float = setting(
        1.0, "data scale: pretrain on a stratified, seeded subset of this fraction of `train`"
    )
    knn_bank: str | None = setting(None, "labelled shards the kNN monitor searches (with knn_val)")
    knn_val: str | None = setting(None, "labelled held-out shards the kNN monitor classifies")
    size: int = setting(32, "side of each view in pixels")
    preset: str = setting("simclr", "augmentation preset", choices=PRESETS)
    augment: dict[str, Any] = setting({}, "per-op overrides of the preset, e.g. {jitter_p: 0.5}")
    channels: int | None = setting(None, "image channels fed to the model; null: as stored")
    num_threads: int | None = setting(
        None, "DALI threads per process; null: 4, or the cores but 2 for CPU ops on a GPU run"
    )
    prefetch: int = setting(2, "batches DALI prepares ahead (its prefetch_queue_depth)")
    augment_device: str = setting(
        "auto", "gpu | cpu (DALI's CPU ops on a GPU run) | auto: cpu up to 64 px", choices=AUGMENT_DEVICES
    )
    views: int = setting(
        2, "views of every image, all from one decode; each view's positives are the others (>= 2)"
    )
    small_views: int = setting(
        0, "multi-crop: this many more views of every image at small_size, positives too"
    )
    small_size: int = setting(16, "side of the small views, below `size`; they get their own forward")
    small_crop_scale: list[float] = setting([0.05, 0.4], "area range of the small views' crops (DINO's)")

    def check(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"config data.fraction={self.fraction} must be in (0, 1]")
        if self.prefetch < 1 or (self.num_threads is not None and self.num_threads < 1):
            raise ConfigError(
                f"config data.prefetch={self.prefetch} and data.num_threads={self.num_threads} "
                "must be at least 1 (num_threads may be null: chosen by where the ops run)"
            )
        if self.views < 2:
            raise ConfigError(
                f"config data.views={self.views} must be at least 2 (each view's positives are the others)"
            )
        if self.small_views < 0:
            raise ConfigError(f"config data.small_views={self.small_views} must be 0 (none) or more")
        if self.small_views and not 0 < self.small_size < self.size:
            raise ConfigError(
                f"config data.small_size={self.small_size} must be in 1..data.size-1 ({self.size - 1})"
            )
        scale = self.small_crop_scale
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(
                f"config data.small_crop_scale={list(scale)} must be [min, max] with 0 < min <= max <= 1"
            )
        if (self.knn_bank is None) != (self.knn_val is None):
            raise ConfigError("config data.knn_bank and data.knn_val go together: set both (or neither)")
        self.augmentation()  # unknown or out-of-range augmentation parameters, no graph built

    def augmentation(self):
        """The preset's ops with this config's overrides (pipelines.create_augment); ConfigError if bad."""
        from fastclr import pipelines

        try:
            return pipelines.create_augment(self.preset, self.size, **self.augment)
        except pipelines.PipelineError as err:
            raise ConfigError(str(err)) from None

    def check_channels(self, stored: int) -> None:
        """Refuse colour ops for one-channel images (`stored` channels in `train`, unless `channels`
        says otherwise), naming the user's folder: checked before a subset or a loader is made."""
        from fastclr import pipelines

        colour = pipelines.colour_ops(self.augmentation())
        if (self.channels or stored) == 1 and colour:
            raise ConfigError(
                f"config data.preset={self.preset} uses colour ({', '.join(colour)}), but data.train="
                f"{self.train} holds 1-channel images; use data.preset=digits or basic, or data.channels=3 "
                "to repeat the channel"
            )


@dataclass
class ModelConfig:
    encoder: str = setting("resnet18", "small_cnn or a timm ResNet (resnet18, resnet34, resnet50, ...)")
    cifar_stem: bool = setting(False, "3x3 stride-1 first conv, no max-pool (32 px images)")
    pretrained_file: str | None = setting(
        None, "local torchvision/timm weights to start from (nothing is downloaded)"
    )
    head: str = setting("mlp_bn", "projection head", choices=HEADS)
    hidden_dim: int = setting(2048, "the head's hidden width")
    out_dim: int = setting(128, "the projection's dimension (what NT-Xent compares)")

    def check(self) -> None:
        from fastclr import encoders

        if self.encoder not in encoders.encoder_names():
            raise ConfigError(
                f"config model.encoder={self.encoder!r} is not valid; use small_cnn or a timm ResNet "
                "(resnet18, resnet34, resnet50, ...)"
            )


@dataclass
class OptimConfig:
    name: str = setting(
        "lars", "optimiser: lars (multi-tensor, trainers/_lars.py), lars_timm, sgd, adam, ...", OPTIMIZERS
    )
    lr: float = setting(0.3, "base learning rate, scaled by lr_scaling")
    lr_scaling: str = setting(
        "linear", "none | linear (lr * B/256) | sqrt (lr * sqrt(B)) of the global batch B", LR_SCALING
    )
    weight_decay: float = setting(1e-6, "never applied to norms and biases")
    momentum: float = setting(0.9, "momentum of lars, lars_timm and sgd")
    schedule: str = setting(
        "cosine", "cosine (to min_lr) | step (x decay_rate at each of decay_epochs)", SCHEDULES
    )
    warmup_epochs: float | None = setting(
        None, "linear warm-up from 0, then the schedule; null: a tenth of the run (10 of 100 epochs)"
    )
    min_lr: float = setting(0.0, "cosine: the final learning rate")
    decay_epochs: list[int] = setting([], "step: epochs where the rate drops; [] = constant")
    decay_rate: float = setting(0.1, "step: the factor at each decay epoch")

    def check(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"config optim.lr={self.lr} must be positive")
        if self.decay_epochs and self.schedule != "step":
            raise ConfigError("config optim.decay_epochs needs optim.schedule=step")


@dataclass
class TrackConfig:
    wandb: bool = setting(False, "log to Weights & Biases (offline when not logged in)")
    tensorboard: bool = setting(False, "log to TensorBoard in the run directory")
    project: str = setting("fastclr", "the tracker's project")
    name: str | None = setting(None, "the tracker's run name; null: the run directory's name")
    tags: list[str] = setting([], "the tracker's tags")
    log_every: int = setting(50, "steps between logged losses (the only host syncs of the hot loop)")
    progress: bool = setting(True, "a progress bar and a line per epoch on the main process")


@dataclass
class PretrainConfig:
    run_dir: str = setting("runs/pretrain", "everything of the run lives here; a checkpoint there resumes it")
    seed: int = setting(0, "seed of the model, the augmentations and the shard order")
    epochs: int = setting(100, "passes over the training shards")
    batch_size: int = setting(
        256, "images per process and step; the global batch is batch_size * processes * grad_accum"
    )
    temperature: float = setting(0.5, "NT-Xent temperature, in (0, 1]")
    precision: str = setting(
        "auto",
        "autocast dtype; auto: bf16 on a GPU, fp32 on the CPU (where bf16 is slow); fp32, not `no`, "
        "which YAML would read as false",
        PRECISIONS,
    )
    grad_accum: int = setting(1, "micro-batches per optimiser step")
    sync_bn: bool = setting(True, "SyncBatchNorm when there is more than one process")
    channels_last: bool = setting(False, "channels-last memory format for the model and its inputs")
    compile: bool = setting(False, "torch.compile the model")
    compile_mode: str = setting("default", "torch.compile's mode", COMPILE_MODES)
    cuda_graphs: bool = setting(
        False, "capture the whole step in one CUDA graph (trainers/_graphs.py): one GPU, lars"
    )
    cpu: bool = setting(False, "stay on the CPU even with a GPU")
    dist_timeout: int = setting(
        1800,
        "seconds a process waits for its peers in a collective (a hung peer then fails the run with "
        "one line); set when the process group starts, so the first run of a process decides",
    )
    max_steps: int | None = setting(None, "stop after this many optimiser steps (smoke tests)")
    checkpoint_every: int = setting(1, "epochs between checkpoints")
    keep_checkpoints: int = setting(2, "newest checkpoints kept")
    knn_k: int = setting(200, "neighbours of the kNN monitor's weighted vote")
    knn_temperature: float = setting(0.1, "temperature of the kNN monitor's weighted vote")
    knn_every: int = setting(
        1,
        "epochs between kNN evaluations (weighted with knn_k, knn_temperature; and k=10 majority); "
        "0: no kNN monitor",
    )
    online_probe: bool = setting(
        True, "a linear head on detached features tracks top-1 (needs labelled shards)"
    )
    online_probe_lr: float = setting(
        0.1, "the probe's own SGD (momentum 0.9), constant rate; never touches the encoder"
    )
    data: DataConfig = setting(DataConfig, "the shards and their augmentation")
    model: ModelConfig = setting(ModelConfig, "the encoder and its projection head")
    optim: OptimConfig = setting(OptimConfig, "optimiser and learning-rate schedule")
    track: TrackConfig = setting(TrackConfig, "experiment tracking and progress")

    def check(self) -> None:
        if not 0 < self.temperature <= 1:
            raise ConfigError(f"config temperature={self.temperature} must be in (0, 1]")
        _at_least(self, "", 1, "epochs", "batch_size", "grad_accum", "keep_checkpoints")
        _at_least(self, "", 1, "checkpoint_every", "dist_timeout")
        _at_least(self, "", 0, "knn_every")
        warmup = self.optim.warmup_epochs
        if warmup is not None and self.epochs < warmup:  # the rate would still be rising at the end
            raise ConfigError(
                f"config optim.warmup_epochs={warmup:g} is more than epochs={self.epochs}, so the run "
                f"would never leave warm-up; refused: set optim.warmup_epochs={self.epochs / 10:g} "
                "(a tenth of the run, as 10 of 100; null does that) or raise epochs"
            )
        if self.online_probe_lr <= 0:
            raise ConfigError(f"config online_probe_lr={self.online_probe_lr} must be positive")
        if self.cuda_graphs:
            from fastclr.trainers._graphs import graphs_problem

            precision = chosen_precision(self.precision, cuda=True)  # graphs run on a GPU only
            problem = graphs_problem(self.optim.name, precision, self.grad_accum, self.compile)
            if problem:
                raise ConfigError(f"config {problem}")

    def resolved(self, cuda: bool) -> PretrainConfig:
        """This config with its automatic choices made for a run on a GPU (`cuda`) or the CPU:
        `precision` auto and `optim.warmup_epochs` null become the values they stand for."""
        warmup = self.optim.warmup_epochs
        optim = dataclasses.replace(self.optim, warmup_epochs=self.epochs / 10 if warmup is None else warmup)
        return dataclasses.replace(self, precision=chosen_precision(self.precision, cuda), optim=optim)


def chosen_precision(precision: str, cuda: bool) -> str:
    """`auto`: bf16 on a GPU (its tensor cores' format), fp32 on the CPU, which computes bf16 slowly
    (mostly by conversion to fp32 and back); any other value as given."""
    if precision != "auto":
        return precision
    return "bf16" if cuda else "fp32"
