"""DALI graphs: read -> decode once -> augment (one view, or N) -> normalise, on GPU or CPU.

Two `@pipeline_def`s, augmented views (pretrain, train) and val, sharing read and decode. On a GPU
the decoder is DALI's "mixed" nvJPEG one and every op after it runs on the
device; with `device_id=None` the same graph runs with CPU operators. A GPU
run may also keep the ops on the CPU (`Output.to_gpu`): DALI then copies only
the finished views to the device, leaving the GPU's time to the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvidia.dali import fn, pipeline_def, types

from fastclr.pipelines._augment import Augmentation
from fastclr.pipelines._ops import HorizontalFlip, Op
from fastclr.pipelines._shardset import ShardSet

LABEL_BYTES = 12  # ASCII labels are padded to this many bytes so a batch is one tensor


@dataclass(frozen=True)
class Output:
    """What a graph emits: side, channels, layout and dtype of each image."""

    size: int
    channels: int
    channels_last: bool
    half: bool  # float16 (cast to bfloat16 on the device if asked) instead of float32
    to_gpu: bool = False  # CPU operators, the finished images copied to the GPU by DALI


def read(src: ShardSet, shard_id: int, num_shards: int, shuffle: bool, seed: int, pad_last_batch: bool):
    """The shard reader; `shuffle` also reshuffles the tar order every epoch."""
    if shuffle:
        extra = {
            "random_shuffle": True,
            "initial_fill": 4096,
            "shuffle_after_epoch": True,
            "shuffle_after_epoch_seed": seed,
        }
    else:
        extra = {"stick_to_shard": True}
    image, label = fn.readers.webdataset(
        paths=list(src.tars),
        index_paths=list(src.indexes),
        ext=[src.image_ext, "cls"],
        missing_component_behavior="error",
        shard_id=shard_id,
        num_shards=num_shards,
        pad_last_batch=pad_last_batch,
        name="reader",
        **extra,
    )
    # "7" / "-1": pad the ASCII bytes so the batch is dense; parsed in torch.
    return image, fn.pad(label, axes=(0,), shape=(LABEL_BYTES,), fill_value=0)


def decode(encoded, src: ShardSet, out_channels: int, gpu: bool):
    """Decoded HWC uint8 image with `out_channels` channels, on the GPU when there is one."""
    if src.raw_shape is not None:  # raw shards skip decoding entirely
        image = fn.reshape(encoded, shape=list(src.raw_shape), layout="HWC")
        if gpu:
            image = image.gpu()
        if out_channels == 3 and src.channels == 1:
            image = fn.cat(image, image, image, axis=2)
        return image
    return fn.decoders.image(
        encoded, device="mixed" if gpu else "cpu", output_type=types.RGB if out_channels == 3 else types.GRAY
    )


def apply(op: Op, image, size: int):
    """`op` on the samples its probability draws (per-sample DALI conditionals: only they pay for it)."""
    if op.active:
        if op.chance is None:
            image = op.dali(image, size)
        elif fn.random.coin_flip(probability=op.chance, dtype=types.BOOL):
            image = op.dali(image, size)
    return image


def view(image, augment: Augmentation, out: Output, mean, std):
    """One randomly augmented view: the ops in order, then normalised into the output layout and dtype."""
    *ops, last = augment
    fused = isinstance(last, HorizontalFlip)  # a last flip is crop_mirror_normalize's `mirror`
    for op in ops if fused else augment:
        image = apply(op, image, out.size)
    return normalise(image, out, mean, std, mirror=last.dali_mirror() if fused else 0)


def normalise(image, out: Output, mean, std, mirror=0, crop=None):
    """Flip, crop, normalise, cast and lay out in one fused op (then to the GPU if `out.to_gpu`)."""
    image = fn.crop_mirror_normalize(
        image,
        mirror=mirror,
        crop=crop,
        mean=[255 * m for m in mean],
        std=[255 * s for s in std],
        dtype=types.FLOAT16 if out.half else types.FLOAT,
        output_layout="HWC" if out.channels_last else "CHW",
    )
    return image.gpu() if out.to_gpu else image


@dataclass(frozen=True)
class SmallViews:
    """The multi-crop group: `count` extra views of every image at a smaller side, with their own crops."""

    count: int
    out: Output  # its side (the rest as the large views')
    augment: Augmentation  # the large views' ops with their own crop scale


@pipeline_def(enable_conditionals=True)
def augment_graph(
    src: ShardSet,
    out: Output,
    augment: Augmentation,
    shard_id: int,
    num_shards: int,
    shuffle_seed: int,
    gpu: bool,
    views: int,
    small: SmallViews | None = None,
):
    """`views` independently augmented views of every image from one decode (pretrain: 2 or more;
    train: 1), then the small views, then the label.

    Each view is its own chain of op instances: ops of one instance share a random state, and
    reusing one for two views would tie them.
    """
    encoded, label = read(src, shard_id, num_shards, shuffle=True, seed=shuffle_seed, pad_last_batch=False)
    image = decode(encoded, src, out.channels, gpu)
    mean, std = src.stats(out.channels)
    large = [view(image, augment, out, mean, std) for _ in range(views)]
    extra = [view(image, small.augment, small.out, mean, std) for _ in range(small.count)] if small else []
    return (*large, *extra, label)


@pipeline_def
def val_graph(src: ShardSet, out: Output, crop_fraction: float, shard_id: int, num_shards: int, gpu: bool):
    """Resize the shorter side to size / crop_fraction, centre crop to size; in stored order."""
    encoded, label = read(src, shard_id, num_shards, shuffle=False, seed=0, pad_last_batch=True)
    image = decode(encoded, src, out.channels, gpu)
    image = fn.resize(image, resize_shorter=round(out.size / crop_fraction))
    mean, std = src.stats(out.channels)
    return normalise(image, out, mean, std, crop=(out.size, out.size)), label
