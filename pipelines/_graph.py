"""DALI graphs: read -> decode once -> augment (one view, or N) -> normalise, on GPU or CPU.

One `@pipeline_def` per job, sharing the decode and view functions. On a GPU
the decoder is DALI's "mixed" nvJPEG one and every op after it runs on the
device; with `device_id=None` the same graph runs with CPU operators. A GPU
run may also keep the ops on the CPU (`Output.to_gpu`): DALI then copies only
the finished views to the device, leaving the GPU's time to the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvidia.dali import fn, pipeline_def, types

from fastclr.pipelines._augment import Augment

LABEL_BYTES = 12  # ASCII labels are padded to this many bytes so a batch is one tensor


@dataclass(frozen=True)
class Source:
    """What a graph reads: the shards and how their images are stored."""

    tars: list[str]
    indexes: list[str]
    image_ext: str  # "jpg", "png", "rgb" or "jpg;png"
    raw_shape: tuple[int, int, int] | None  # HWC of raw ("rgb") images
    channels: int  # channels stored
    mean: tuple[float, ...]  # per channel, pixel values in [0, 1]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Output:
    """What a graph emits: side, channels, layout and dtype of each image."""

    size: int
    channels: int
    channels_last: bool
    half: bool  # float16 (cast to bfloat16 on the device if asked) instead of float32
    to_gpu: bool = False  # CPU operators, the finished images copied to the GPU by DALI


def read(src: Source, shard_id: int, num_shards: int, shuffle: bool, seed: int, pad_last_batch: bool):
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
        paths=src.tars,
        index_paths=src.indexes,
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


def decode(encoded, src: Source, out_channels: int, gpu: bool):
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


def _uniform(low: float, high: float):
    """Per-sample draw from [low, high]; a constant when the range is one value."""
    return low if low == high else fn.random.uniform(range=(low, high))


def _drawn(probability: float):
    """Per-sample boolean that is true with `probability` (for DALI conditionals)."""
    return fn.random.coin_flip(probability=probability, dtype=types.BOOL)


def view(image, aug: Augment, out: Output, mean, std, crop: bool = True):
    """One randomly augmented view, normalised, in the output layout and dtype."""
    size = out.size
    if crop:
        image = fn.random_resized_crop(
            image,
            size=(size, size),
            random_area=list(aug.crop_scale),
            random_aspect_ratio=list(aug.crop_ratio),
        )
    if aug.rotate_deg:
        angle = _uniform(-aug.rotate_deg, aug.rotate_deg)
        image = fn.rotate(image, angle=angle, keep_size=True, fill_value=0)
    # Per-sample branches (DALI conditionals): only the samples drawn pay for the op.
    if out.channels == 3 and aug.jitter_p and _drawn(aug.jitter_p):
        image = fn.color_twist(
            image,
            brightness=_uniform(1 - aug.brightness, 1 + aug.brightness),
            contrast=_uniform(1 - aug.contrast, 1 + aug.contrast),
            saturation=_uniform(1 - aug.saturation, 1 + aug.saturation),
            hue=_uniform(-aug.hue * 180, aug.hue * 180),  # degrees
        )
    if out.channels == 3 and aug.gray_p and _drawn(aug.gray_p):
        image = fn.color_twist(image, saturation=0.0)  # luma in every channel
    if aug.blur_p and _drawn(aug.blur_p):
        kernel = max(3, int(aug.blur_kernel * size) // 2 * 2 + 1)  # odd
        image = fn.gaussian_blur(image, window_size=kernel, sigma=_uniform(*aug.blur_sigma))
    if aug.solarize_p and _drawn(aug.solarize_p):
        wide = fn.cast(image, dtype=types.INT16)
        image = fn.cast(wide + (255 - 2 * wide) * (wide >= aug.solarize_threshold), dtype=types.UINT8)
    return normalise(image, out, mean, std, mirror=fn.random.coin_flip(probability=aug.flip_p))


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


def channel_stats(src: Source, channels: int) -> tuple[list[float], list[float]]:
    """Manifest mean/std for the output channel count (a gray mean is repeated for RGB)."""
    mean, std = list(src.mean), list(src.std)
    if len(mean) != channels:
        mean, std = mean[:1] * channels, std[:1] * channels
    return mean, std


@dataclass(frozen=True)
class SmallViews:
    """The multi-crop group: `count` extra views of every image at a smaller side, with their own crops."""

    count: int
    out: Output  # its side (the rest as the large views')
    augment: Augment  # the large views' ops with their own crop scale


@pipeline_def(enable_conditionals=True)
def pretrain_graph(
    src: Source,
    out: Output,
    aug: Augment,
    shard_id: int,
    num_shards: int,
    shuffle_seed: int,
    gpu: bool,
    views: int = 2,
    small: SmallViews | None = None,
):
    """`views` independently augmented views of every image from one decode, then the small views, then
    the label.

    Each view is its own chain of op instances: ops of one instance share a random state, and
    reusing one for two views would tie them (PITFALLS 20).
    """
    encoded, label = read(src, shard_id, num_shards, shuffle=True, seed=shuffle_seed, pad_last_batch=False)
    image = decode(encoded, src, out.channels, gpu)
    mean, std = channel_stats(src, out.channels)
    large = [view(image, aug, out, mean, std) for _ in range(views)]
    extra = [view(image, small.augment, small.out, mean, std) for _ in range(small.count)] if small else []
    return (*large, *extra, label)


@pipeline_def(enable_conditionals=True)
def eval_train_graph(
    src: Source, out: Output, aug: Augment, shard_id: int, num_shards: int, shuffle_seed: int, gpu: bool
):
    """One augmented view (random resized crop and flip by default) and the label."""
    encoded, label = read(src, shard_id, num_shards, shuffle=True, seed=shuffle_seed, pad_last_batch=False)
    image = decode(encoded, src, out.channels, gpu)
    mean, std = channel_stats(src, out.channels)
    return view(image, aug, out, mean, std), label


@pipeline_def
def eval_val_graph(src: Source, out: Output, crop_fraction: float, shard_id: int, num_shards: int, gpu: bool):
    """Resize the shorter side to size / crop_fraction, centre crop to size; in stored order."""
    encoded, label = read(src, shard_id, num_shards, shuffle=False, seed=0, pad_last_batch=True)
    image = decode(encoded, src, out.channels, gpu)
    image = fn.resize(image, resize_shorter=round(out.size / crop_fraction))
    mean, std = channel_stats(src, out.channels)
    return normalise(image, out, mean, std, crop=(out.size, out.size)), label
