"""DALI input pipelines: N-view pretraining and eval train/val, per rank, on GPU or CPU.

Loaders (torch tensors per rank, already on the device):
    create_loader(mode, shards, preset=, augment_overrides=, **kwargs) -> DaliLoader
        mode "pretrain" (views, small views, label), "train" (one view, label), "val" (stored order).
    DaliLoader, TorchvisionLoader: the DALI graph, and torchvision's DataLoader (the benchmark's
        baseline) over the same shards and ops. Both take a ShardSet or a folder.
Shards:
    open_shards(folder) -> ShardSet: the manifest loaded, missing indexes rebuilt, the tars checked,
        once; pass the ShardSet to every loader of the run.
Augmentations (tuples of ops, applied in order by both loaders):
    create_augment(preset, size, **overrides): a preset for an image side, parameters overridden by
        name (crop_scale, jitter_p, ...); augment_parameters() gives every name and its type;
        colour_ops(augment): the ops that need three channels.
    PRESETS, register_preset: simclr, basic, color, gray, strong, digits.
    Op, register_op, OPS: the op base class and registry; the ops RandomResizedCrop, Rotate,
        ColorJitter, Grayscale, GaussianBlur, Solarize, HorizontalFlip.
Helpers:
    augment_on(choice, size, gpu): where DALI's ops run; AUGMENT_DEVICES, MODES; default_threads.
    val_transform(size, mean, std): the val view in torchvision (what an encoder's users feed it);
        val_crop_fraction(size): its default centre crop.
    train_steps, rank_share: batches per epoch and samples per rank; parse_labels: padded ASCII labels.
Errors:
    PipelineError: bad data or settings, as one line naming the folder and the fix.
    PositionError: a saved loader position (a checkpoint's) that DALI refuses.
"""

from fastclr.pipelines._augment import (
    PRESETS,
    Augmentation,
    augment_parameters,
    check_augment,
    colour_ops,
    configure,
    create_augment,
    register_preset,
)
from fastclr.pipelines._baseline import TorchvisionLoader, val_transform
from fastclr.pipelines._errors import PipelineError, PositionError
from fastclr.pipelines._loader import (
    AUGMENT_DEVICES,
    MODES,
    DaliLoader,
    augment_on,
    create_loader,
    default_threads,
    parse_labels,
    rank_share,
    train_steps,
    val_crop_fraction,
)
from fastclr.pipelines._ops import (
    OPS,
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    Op,
    RandomResizedCrop,
    Rotate,
    Solarize,
    register_op,
)
from fastclr.pipelines._shardset import ShardSet, open_shards

__all__ = [
    "AUGMENT_DEVICES",
    "MODES",
    "OPS",
    "PRESETS",
    "Augmentation",
    "ColorJitter",
    "DaliLoader",
    "GaussianBlur",
    "Grayscale",
    "HorizontalFlip",
    "Op",
    "PipelineError",
    "PositionError",
    "RandomResizedCrop",
    "Rotate",
    "ShardSet",
    "Solarize",
    "TorchvisionLoader",
    "augment_on",
    "augment_parameters",
    "check_augment",
    "colour_ops",
    "configure",
    "create_augment",
    "create_loader",
    "default_threads",
    "open_shards",
    "parse_labels",
    "rank_share",
    "register_op",
    "register_preset",
    "train_steps",
    "val_crop_fraction",
    "val_transform",
]
