"""DALI input pipelines: N-view pretraining and eval train/val, per rank, on GPU or CPU."""

from fastclr.pipelines._augment import PRESETS, Augment, PipelineError, create_augment
from fastclr.pipelines._baseline import TorchvisionLoader
from fastclr.pipelines._loader import (
    AUGMENT_DEVICES,
    MODES,
    DaliLoader,
    augment_on,
    create_loader,
    parse_labels,
    rank_share,
    shard_source,
    train_steps,
)

__all__ = [
    "AUGMENT_DEVICES",
    "MODES",
    "PRESETS",
    "Augment",
    "DaliLoader",
    "PipelineError",
    "TorchvisionLoader",
    "augment_on",
    "create_augment",
    "create_loader",
    "parse_labels",
    "rank_share",
    "shard_source",
    "train_steps",
]
