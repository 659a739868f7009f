"""Loaders: a DALI graph per rank, yielding torch tensors already on the training device.

    train = open_shards("data/cifar10-train")  # checked once; a folder path works too
    loader = create_loader("pretrain", train, batch_size=512, size=32,
                           rank=accelerator.process_index, world_size=accelerator.num_processes,
                           device=accelerator.device, dtype=torch.bfloat16, channels_last=True)
    for *views, label in loader: ...

`pretrain` yields (view_1, ..., view_N, label): `views` (N, default 2) views of
every decoded image, then, with `small_views` M > 0, M more at `small_size` with
their own `small_crop_scale` (multi-crop); `train` yields (image, label) with one
random view; `val` (image, label) in stored order, every sample of the rank's
part exactly once. Every rank of `pretrain` and `train` gets the same number of
batches, `len(loader)`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch
from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

from fastclr.pipelines._augment import Augmentation, check_augment, colour_ops, configure, create_augment
from fastclr.pipelines._errors import PipelineError, PositionError
from fastclr.pipelines._graph import Output, SmallViews, augment_graph, val_graph
from fastclr.pipelines._shardset import ShardSet, open_shards

MODES = ("pretrain", "train", "val")
AUGMENT_DEVICES = ("auto", "gpu", "cpu")
# `auto` runs DALI's operators on the host's cores up to this image side on a GPU run: tiny images
# cross to the GPU cheaply, and the GPU's time is left to the model (the pipeline and the model share
# the GPU: a pipeline that outruns the model alone can still slow it). A placeholder until a GPU
# measures it: bench/gpu.sh's `levers` stage runs both devices at 32 and 224 px, end to end
# (BENCHMARKS.md, "On the next GPU session", says how the figures set it).
AUTO_CPU_MAX_SIDE = 64
# ... and only with this many cores per process: 2 cores made about 7k two-view images/s of 32 px here
# (BENCHMARKS.md), the model alone 25k on an H100, so fewer cores would starve the GPU. Also a
# placeholder: `levers` and `prefetch` measure the CPU operators' rate per thread on the GPU host.
AUTO_CPU_MIN_CORES = 8
# Cores a process keeps from DALI's CPU operators: the eager step's Python thread launches every
# kernel and waits for no one, and the loader's own thread hands batches over; DALI threads that
# took all the cores would slow both.
TRAINER_CORES = 2
DTYPES = {torch.float32: False, torch.float16: True, torch.bfloat16: True}
DEFAULT_PRESET = {"pretrain": "simclr", "train": "basic"}  # by mode; val has no augmentation


def parse_labels(padded: torch.Tensor) -> torch.Tensor:
    """(B, L) zero-padded ASCII integers such as b"7", b"-1" -> (B,) int64, on any device."""
    digits = padded.long() - ord("0")
    is_digit = (digits >= 0) & (digits <= 9)
    count = is_digit.sum(1, keepdim=True)
    position = is_digit.cumsum(1)  # 1-based position among the digits
    power = torch.where(is_digit, count - position, torch.zeros_like(position))
    value = (torch.where(is_digit, digits, torch.zeros_like(digits)) * 10**power).sum(1)
    return torch.where(padded[:, 0] == ord("-"), -value, value)


def rank_share(total: int, rank: int, world_size: int) -> int:
    """Samples DALI's reader gives shard `rank` of `world_size` (its split: floor(total * i / n))."""
    return total * (rank + 1) // world_size - total * rank // world_size


def train_steps(num_samples: int, batch_size: int, world_size: int) -> int:
    """Batches per epoch in train modes: every rank takes the same whole batches (the smallest share)."""
    return (num_samples // world_size) // batch_size


def augment_on(choice: str, size: int, gpu: bool) -> str:
    """Where DALI's decode and augment ops run: "gpu" or "cpu" (always "cpu" without a GPU)."""
    if choice not in AUGMENT_DEVICES:
        raise PipelineError(f"unknown augment_device {choice!r}; choose one of: {', '.join(AUGMENT_DEVICES)}")
    if not gpu:
        return "cpu"
    if choice == "auto":
        return "cpu" if size <= AUTO_CPU_MAX_SIDE and cores_per_process() >= AUTO_CPU_MIN_CORES else "gpu"
    return choice


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores_per_process() -> int:
    """This process's share of its cores (torchrun's LOCAL_WORLD_SIZE processes share them)."""
    return max(1, _cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def default_threads(ops_on_gpu: bool, gpu_run: bool = True) -> int:
    """DALI threads: 4 feed GPU ops (more can lower GPU use; 3 to 5 are enough), and 4 leave a
    CPU-only run's model its cores; CPU ops feeding a GPU get this process's share of the cores but
    TRAINER_CORES (at least 2: the model does not need the rest)."""
    if ops_on_gpu or not gpu_run:
        return min(4, _cores())
    return max(2, cores_per_process() - TRAINER_CORES)


def val_crop_fraction(size: int) -> float:
    """The val view's default centre crop over the resized shorter side: all of it up to 64 px (small
    images have no border to spare), ImageNet's 0.875 above."""
    return 1.0 if size <= 64 else 0.875


def check_loader_args(mode: str, dtype: torch.dtype, rank: int, world_size: int) -> None:
    """The checks every loader makes of its arguments, before reading anything."""
    if mode not in MODES:
        raise PipelineError(f"unknown loader mode {mode!r}; choose one of: {', '.join(MODES)}")
    if dtype not in DTYPES:
        raise PipelineError(f"unsupported dtype {dtype}; choose float32, float16 or bfloat16")
    if not 0 <= rank < world_size:
        raise PipelineError(f"rank {rank} outside a world of {world_size}")


def check_views(
    views: int, small_views: int, small_size: int | None, size: int, small_crop_scale: tuple | None
) -> None:
    """The pretrain graph's view counts: at least two views, and small views smaller than the large."""
    if views < 2:
        raise PipelineError(f"views={views}: contrastive pretraining needs at least 2 views of each image")
    if small_views < 0:
        raise PipelineError(f"small_views={small_views} must be 0 (none) or more")
    if small_views and (small_size is None or not 0 < small_size < size):
        raise PipelineError(
            f"small_size={small_size} must be between 0 and the views' size {size} (exclusive)"
        )
    if small_crop_scale is not None and not 0 < small_crop_scale[0] <= small_crop_scale[1] <= 1:
        raise PipelineError(f"small_crop_scale={tuple(small_crop_scale)} must satisfy 0 < min <= max <= 1")


class Loader:
    """What every loader does with its arguments: checks them, opens the shards, settles the augmentation.

    Args:
        mode: "pretrain", "train" or "val" (see the module docstring).
        shards: a ShardSet, or a shard folder to open.
        batch_size: images per batch and rank.
        size: side of the square images out.
        augment: the ops of a view (train modes); default the preset `simclr` (pretrain) or `basic`.
        crop_fraction: val's centre crop over the resized side; default 1 up to 64 px, else 0.875.
        rank, world_size: this process's part of the shards.
        device, dtype, channels_last: where the batches land, their dtype and memory layout.
        channels: channels out (1 or 3); default the shards'.
        seed: the random ops' and the shuffle's seed.
    """

    def __init__(
        self,
        mode: str,
        shards: ShardSet | str | Path,
        *,
        batch_size: int,
        size: int,
        augment: Augmentation | None = None,
        crop_fraction: float | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        channels: int | None = None,
        seed: int = 0,
    ):
        check_loader_args(mode, dtype, rank, world_size)
        self.shards = open_shards(shards)
        self.folder, self.manifest = self.shards.folder, self.shards.manifest
        self.num_samples = self.shards.num_samples
        self.mode, self.batch_size, self.size, self.seed = mode, batch_size, size, seed
        self.rank, self.world_size = rank, world_size
        self.device, self.dtype, self.channels_last = torch.device(device), dtype, channels_last
        self.channels = channels or self.shards.channels
        self.crop_fraction = crop_fraction or val_crop_fraction(size)
        self.augment = None
        if mode != "val":
            if augment is None:
                augment = create_augment(DEFAULT_PRESET[mode], size)
            self.augment = check_augment(augment)
            colour = colour_ops(self.augment)
            if self.channels == 1 and colour:
                raise PipelineError(
                    f"{self.folder}: images have one channel but the augmentation uses colour "
                    f"({', '.join(colour)}); use the digits preset or channels=3"
                )


class DaliLoader(Loader):
    """Iterates one epoch of batches per `iter()`; see the module docstring and `Loader` for the arguments.

    Args:
        num_threads: DALI's threads; default by where the ops run (`default_threads`).
        prefetch: batches DALI prepares ahead.
        augment_device: "auto", "gpu" or "cpu": where decode and augment run on a GPU run (`augment_on`).
        checkpoint: `state()` of an earlier loader of the same settings, to continue its stream.
        views, small_views, small_size, small_crop_scale: the pretrain views (module docstring).
    """

    def __init__(
        self,
        mode: str,
        shards: ShardSet | str | Path,
        *,
        num_threads: int | None = None,
        prefetch: int = 2,
        augment_device: str = "auto",
        checkpoint: bytes | None = None,
        views: int = 2,
        small_views: int = 0,
        small_size: int | None = None,
        small_crop_scale: tuple[float, float] | None = None,
        **common,
    ):
        super().__init__(mode, shards, **common)
        check_views(views, small_views, small_size, self.size, small_crop_scale)
        share = rank_share(self.num_samples, self.rank, self.world_size)
        if mode == "val":
            self.rank_samples = share
            self.steps = math.ceil(share / self.batch_size)
        else:
            self.steps = train_steps(self.num_samples, self.batch_size, self.world_size)
            self.rank_samples = self.steps * self.batch_size
            if self.steps == 0:
                raise PipelineError(
                    f"{self.folder}: {self.num_samples} samples cannot fill one batch of "
                    f"{self.batch_size} on each of {self.world_size} ranks; lower the batch size"
                )
        gpu = self.device.type == "cuda"
        self.augment_device = augment_on(augment_device, self.size, gpu)
        ops_on_gpu = self.augment_device == "gpu"
        out = Output(self.size, self.channels, self.channels_last, DTYPES[self.dtype], gpu and not ops_on_gpu)
        self.num_threads = num_threads or default_threads(ops_on_gpu, gpu)
        settings = dict(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=(self.device.index or 0) if gpu else None,
            seed=self.seed * 1000 + self.rank,
            prefetch_queue_depth=prefetch,
            # Train graphs can save their reader and RNG position: a resumed run continues the stream.
            enable_checkpointing=mode != "val",
            checkpoint=checkpoint,
        )
        part = dict(src=self.shards, out=out, shard_id=self.rank, num_shards=self.world_size, gpu=ops_on_gpu)
        if mode == "val":
            self.pipe = val_graph(**part, crop_fraction=self.crop_fraction, **settings)
        else:  # train: one view and no small ones
            small = None
            if mode == "pretrain" and small_views:  # the large views' ops, with their own crop scale
                ops = (
                    configure(self.augment, crop_scale=small_crop_scale) if small_crop_scale else self.augment
                )
                small = SmallViews(small_views, dataclasses.replace(out, size=small_size), ops)
            self.pipe = augment_graph(
                **part,
                augment=self.augment,
                shuffle_seed=self.seed,
                views=views if mode == "pretrain" else 1,
                small=small,
                **settings,
            )
        if checkpoint is None:
            self._guard(self.pipe.build)
        else:
            self._build_at(checkpoint)

    def _build_at(self, position: bytes) -> None:
        """Build the graph at a saved position. The shards were checked when opened, so what DALI
        refuses here is the position (PositionError), not the data: no verify of every sample."""
        try:
            self.pipe.build()
        except (RuntimeError, ValueError, KeyError) as err:  # a garbled position's UnicodeDecodeError too
            raise PositionError(
                f"DALI refuses the loader position saved in it ({dali_reason(err)})"
            ) from None

    def __len__(self) -> int:
        return self.steps

    def _guard(self, step):
        """Run a DALI call; a data fault becomes one line naming the shard and sample."""
        try:
            return step()
        except RuntimeError as err:
            raise PipelineError(
                self.shards.explain(f"the DALI pipeline failed ({dali_reason(err)})")
            ) from None

    def _to_torch(self, tensor_list) -> torch.Tensor:
        """Copy one output batch into a fresh tensor on the device (DALI reuses its buffers)."""
        tensor = tensor_list.as_tensor()
        target = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        return feed_ndarray(tensor, target, cuda_stream=stream)

    def _image(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            batch = batch.permute(0, 3, 1, 2)  # NHWC memory seen as NCHW: channels_last strides
        return batch if batch.dtype == self.dtype else batch.to(self.dtype)

    def state(self) -> bytes:
        """DALI's checkpoint of reader and random state after the last batch taken."""
        return self.pipe.checkpoint()

    def __iter__(self):
        return self.batches()

    def batches(self, start: int = 0):
        """The epoch's batches from `start` on (a resumed run starts mid-epoch)."""
        for step in range(start, self.steps):
            outputs = self._guard(self.pipe.run)
            *images, label = outputs
            images = [self._image(self._to_torch(x)) for x in images]
            label = self._labels(label)
            if self.mode == "val" and step == self.steps - 1:
                keep = self.rank_samples - step * self.batch_size  # drop the reader's padding
                images, label = [x[:keep] for x in images], label[:keep]
            yield (*images, label)

    def _labels(self, padded) -> torch.Tensor:
        """Parse on the CPU, where checking costs no device sync; a label outside the classes is refused."""
        tensor = padded.as_tensor()
        labels = parse_labels(feed_ndarray(tensor, torch.empty(tensor.shape(), dtype=torch.uint8)))
        classes = self.shards.num_classes if self.shards.labeled else 0
        low, high = (0, classes - 1) if classes else (-1, -1)
        bad = labels[(labels < low) | (labels > high)]
        if bad.numel():
            raise PipelineError(
                self.shards.explain(f"label {int(bad[0])} outside {low}..{high}, the manifest's classes")
            )
        return labels.to(self.device, non_blocking=True)


def dali_reason(err: Exception) -> str:
    """The one informative line of a DALI error: the operator and what it encountered."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    operator = next((line for line in lines if line.startswith("Error in")), "")
    after = (
        lines[lines.index("encountered:") + 1] if "encountered:" in lines[:-1] else lines[-1] if lines else ""
    )
    return f"{operator.rstrip(',')}: {after}"[:400] if operator else after[:400]


def create_loader(
    mode: str,
    shards: ShardSet | str | Path,
    *,
    preset: str | None = None,
    augment_overrides: dict | None = None,
    **kwargs,
) -> DaliLoader:
    """`DaliLoader(mode, shards, **kwargs)`, its augmentation the preset `preset` (default by mode) with
    `augment_overrides` ({"jitter_p": 0.5, ...}), or `augment` as given."""
    if preset is not None or augment_overrides:
        preset = preset or DEFAULT_PRESET.get(mode, "basic")
        kwargs["augment"] = create_augment(preset, kwargs["size"], **(augment_overrides or {}))
    return DaliLoader(mode, shards, **kwargs)
