"""The torchvision DataLoader path over the same shards and the same augmentation ops.

It exists as the benchmark's baseline and as a fallback for images DALI cannot
decode; training uses the DALI loader. Ranks split the tars (webdataset's
node splitter), DataLoader workers split a rank's tars again.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from fastclr.pipelines._augment import Augmentation
from fastclr.pipelines._errors import PipelineError
from fastclr.pipelines._loader import Loader, val_crop_fraction
from fastclr.pipelines._shardset import ShardSet


def val_transform(size: int, mean, std, crop_fraction: float | None = None) -> v2.Compose:
    """The val view in torchvision, for uint8 CHW images: the shorter side resized to size /
    crop_fraction (default `val_crop_fraction(size)`), a centre crop of `size`, scaled to [0, 1] and
    normalised with `mean`, `std` (per channel, of [0, 1] pixels): what DALI's val graph computes."""
    crop_fraction = crop_fraction or val_crop_fraction(size)
    return v2.Compose(
        [
            v2.Resize(round(size / crop_fraction), antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def transform(augment: Augmentation | None, size: int, mean, std, crop_fraction: float) -> v2.Compose:
    """torchvision's version of the DALI view (the ops of `augment` in order, each with its chance),
    or of the val resize + centre crop; then normalised."""
    if augment is None:
        return val_transform(size, mean, std, crop_fraction)
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    ops = []
    for op in augment:
        if op.active:
            form = op.torchvision(size)
            ops.append(form if op.chance is None else v2.RandomApply([form], p=op.chance))
    return v2.Compose(ops + tail)


class _Sample:
    """Picklable per-sample function for DataLoader workers: decode, then one or two views."""

    def __init__(self, image_ext: list[str], raw_shape, channels: int, make_view, views: int):
        self.image_ext, self.raw_shape, self.channels = image_ext, raw_shape, channels
        self.make_view, self.views = make_view, views

    def __call__(self, sample: dict) -> tuple:
        ext = next(e for e in self.image_ext if e in sample)
        data = torch.frombuffer(bytearray(sample[ext]), dtype=torch.uint8)
        if self.raw_shape is not None:
            image = data.reshape(self.raw_shape).permute(2, 0, 1)
            if self.channels == 3 and image.shape[0] == 1:
                image = image.expand(3, -1, -1)
        else:
            image = decode_image(data, mode=ImageReadMode.RGB if self.channels == 3 else ImageReadMode.GRAY)
        label = int(sample["cls"])
        return (*(self.make_view(image) for _ in range(self.views)), label)


class TorchvisionLoader(Loader):
    """Like `DaliLoader` (two views in pretrain), but `len()` is an upper bound: each worker drops its
    own last partial batch. `num_workers` DataLoader workers, each reading whole tars."""

    def __init__(self, mode: str, shards: ShardSet | str | Path, *, num_workers: int = 2, **common):
        super().__init__(mode, shards, **common)
        src, rank, world_size, batch_size = self.shards, self.rank, self.world_size, self.batch_size
        if len(src.tars) < world_size * max(num_workers, 1):
            raise PipelineError(
                f"{self.folder}: {len(src.tars)} tars cannot feed {world_size} ranks x "
                f"{num_workers} workers; reconvert with a smaller --shard-size"
            )
        make_view = transform(self.augment, self.size, *src.stats(self.channels), self.crop_fraction)
        per_sample = _Sample(
            src.image_ext.split(";"), src.raw_shape, self.channels, make_view, 2 if mode == "pretrain" else 1
        )

        def this_rank(urls):  # ranks take every world_size-th tar
            return itertools.islice(urls, rank, None, world_size)

        shuffle = mode != "val"
        dataset = wds.WebDataset(
            list(src.tars),
            shardshuffle=len(src.tars) if shuffle else False,
            nodesplitter=this_rank,
            seed=self.seed,
            empty_check=False,
        )
        if shuffle:
            dataset = dataset.shuffle(1000, seed=self.seed)
        dataset = dataset.map(per_sample)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=shuffle,
            persistent_workers=num_workers > 0,
        )
        counts = [s["num_samples"] for s in self.manifest["shards"]][rank::world_size]
        per_worker = [sum(counts[w :: max(num_workers, 1)]) for w in range(max(num_workers, 1))]
        if shuffle:  # an upper bound: tar order, and so each worker's share, changes per epoch
            self.steps = sum(counts) // batch_size
        else:  # exact: val reads every tar in order, each worker ends with its partial batch
            self.steps = sum(math.ceil(n / batch_size) for n in per_worker)
        if self.steps == 0:
            raise PipelineError(
                f"{self.folder}: rank {rank} gets too few samples for one batch of {batch_size}"
            )

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for step, (*images, label) in enumerate(self.loader):
            if step == self.steps:  # train modes only; val batches end by themselves
                break
            moved = []
            for image in images:
                image = image.to(self.device, non_blocking=True).to(self.dtype)
                moved.append(
                    image.contiguous(memory_format=torch.channels_last) if self.channels_last else image
                )
            yield (*moved, label.to(self.device, non_blocking=True))
