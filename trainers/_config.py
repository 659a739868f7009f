"""The pretrain schema: plain dataclasses, every hyperparameter a named field.

launch/ loads YAML and `key=value` overrides into these with OmegaConf (unknown
keys refused); trainers only read the resulting objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    train: str = "???"  # shard folder to pretrain on (labels unused)
    fraction: float = 1.0  # data scale: pretrain on a stratified, seeded subset of this fraction of `train`
    knn_bank: str | None = None  # labelled shards the kNN monitor searches
    knn_val: str | None = None  # labelled held-out shards it classifies
    size: int = 32  # side of each view in pixels
    preset: str = "simclr"  # augmentation preset (pipelines.PRESETS)
    augment: dict[str, Any] = field(default_factory=dict)  # per-op overrides, e.g. {jitter_p: 0.5}
    channels: int | None = None  # images fed to the model; default: as stored
    num_threads: int | None = None  # DALI threads per process; None: 4, or the cores for CPU ops on a GPU run
    prefetch: int = 2  # batches DALI prepares ahead (its prefetch_queue_depth)
    augment_device: str = "auto"  # gpu | cpu (DALI's CPU ops on a GPU run) | auto: cpu up to 64 px
    views: int = 2  # views of every image, all from one decode; each view's positives are the others (>= 2)
    small_views: int = 0  # multi-crop: this many more views of every image at small_size, positives too
    small_size: int = 16  # side of the small views, below `size`; they get their own forward
    small_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])  # their crops' area (DINO's)


@dataclass
class ModelConfig:
    encoder: str = "resnet18"  # small_cnn or a timm ResNet
    cifar_stem: bool = False  # 3x3 stride-1 first conv, no max-pool
    pretrained_file: str | None = None  # local torchvision/timm weights (nothing is downloaded)
    head: str = "mlp_bn"  # mlp_bn | mlp_no_bn | linear | none
    hidden_dim: int = 2048
    out_dim: int = 128


@dataclass
class OptimConfig:
    name: str = "lars"  # lars (multi-tensor: trainers/_lars.py) | lars_timm | sgd | adam | adamw | lamb
    lr: float = 0.3  # base learning rate, scaled by lr_scaling
    lr_scaling: str = "linear"  # none | linear (lr * B/256) | sqrt (lr * sqrt(B)) of the global batch
    weight_decay: float = 1e-6  # never applied to norms and biases
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine (to min_lr) | step (x decay_rate at each of decay_epochs)
    warmup_epochs: float = 10.0  # linear warm-up from 0, then the schedule
    min_lr: float = 0.0  # cosine: the final learning rate
    decay_epochs: list[int] = field(default_factory=list)  # step: epochs where the rate drops; [] = constant
    decay_rate: float = 0.1


@dataclass
class TrackConfig:
    wandb: bool = False  # Weights & Biases, offline when not logged in
    tensorboard: bool = False
    project: str = "fastclr"
    name: str | None = None  # default: the run directory's name
    tags: list[str] = field(default_factory=list)
    log_every: int = 50  # steps between logged losses (the only host syncs of the hot loop)
    progress: bool = True  # progress bar and a line per epoch on the main process


@dataclass
class PretrainConfig:
    run_dir: str = "runs/pretrain"  # everything of the run lives here; a checkpoint there resumes it
    seed: int = 0
    epochs: int = 100
    batch_size: int = 256  # per process; the global batch is batch_size * processes * grad_accum
    temperature: float = 0.5
    precision: str = "bf16"  # bf16 | fp16 | fp32 (autocast dtype; "no" would read as false in YAML)
    grad_accum: int = 1
    sync_bn: bool = True  # SyncBatchNorm when there is more than one process
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    cuda_graphs: bool = False  # capture the whole step in one CUDA graph (trainers/_graphs.py): one GPU, lars
    cpu: bool = False  # force the CPU even with a GPU
    dist_timeout: int = 1800  # seconds a process waits for its peers in a collective (a hung peer then
    # fails the run with one line); set when the process group starts, so the first run of a process decides
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests)
    checkpoint_every: int = 1  # epochs between checkpoints
    keep_checkpoints: int = 2
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_every: int = (
        1  # epochs between kNN evaluations (weighted with knn_k, knn_temperature; and k=10 majority)
    )
    online_probe: bool = True  # a linear head on detached features tracks top-1 (needs labelled shards)
    online_probe_lr: float = 0.1  # its own SGD (momentum 0.9), constant rate; never touches the encoder
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
