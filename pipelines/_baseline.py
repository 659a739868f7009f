"""The torchvision DataLoader path over the same shards and the same `Augment`.

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

from fastclr.pipelines._augment import Augment, PipelineError, create_augment
from fastclr.pipelines._graph import channel_stats
from fastclr.pipelines._loader import check_loader_args, shard_source


def transform(augment: Augment | None, size: int, mean, std, crop_fraction: float) -> v2.Compose:
    """torchvision's version of the DALI view (`augment`), or of the val resize + centre crop."""
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if augment is None:
        return v2.Compose(
            [v2.Resize(round(size / crop_fraction), antialias=True), v2.CenterCrop(size), *tail]
        )
    a = augment
    ops = [v2.RandomResizedCrop(size, scale=a.crop_scale, ratio=a.crop_ratio, antialias=True)]
    if a.rotate_deg:
        ops.append(v2.RandomRotation(a.rotate_deg))
    ops.append(v2.RandomHorizontalFlip(a.flip_p))
    if a.jitter_p:
        ops.append(
            v2.RandomApply([v2.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue)], p=a.jitter_p)
        )
    if a.gray_p:
        ops.append(v2.RandomGrayscale(a.gray_p))
    if a.blur_p:
        kernel = max(3, int(a.blur_kernel * size) // 2 * 2 + 1)
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel, a.blur_sigma)], p=a.blur_p))
    if a.solarize_p:
        ops.append(v2.RandomSolarize(a.solarize_threshold, p=a.solarize_p))
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


class TorchvisionLoader:
    """Like `DaliLoader`, but `len()` is an upper bound: each worker drops its own last partial batch."""

    def __init__(
        self,
        mode: str,
        folder: str | Path,
        *,
        batch_size: int,
        size: int,
        augment: Augment | None = None,
        crop_fraction: float | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        channels: int | None = None,
        seed: int = 0,
        num_workers: int = 2,
    ):
        check_loader_args(mode, dtype, rank, world_size)
        src, manifest = shard_source(folder)
        if len(src.tars) < world_size * max(num_workers, 1):
            raise PipelineError(
                f"{folder}: {len(src.tars)} tars cannot feed {world_size} ranks x "
                f"{num_workers} workers; reconvert with a smaller --shard-size"
            )
        self.device, self.dtype, self.channels_last = torch.device(device), dtype, channels_last
        out_channels = channels or src.channels
        if mode != "val" and augment is None:
            augment = create_augment("simclr" if mode == "pretrain" else "basic", size)
        mean, std = channel_stats(src, out_channels)
        make_view = transform(
            None if mode == "val" else augment,
            size,
            mean,
            std,
            crop_fraction or (1.0 if size <= 64 else 0.875),
        )
        per_sample = _Sample(
            src.image_ext.split(";"), src.raw_shape, out_channels, make_view, 2 if mode == "pretrain" else 1
        )

        def this_rank(urls):  # ranks take every world_size-th tar
            return itertools.islice(urls, rank, None, world_size)

        shuffle = mode != "val"
        dataset = wds.WebDataset(
            src.tars,
            shardshuffle=len(src.tars) if shuffle else False,
            nodesplitter=this_rank,
            seed=seed,
            empty_check=False,
        )
        if shuffle:
            dataset = dataset.shuffle(1000, seed=seed)
        dataset = dataset.map(per_sample)
        gpu = self.device.type == "cuda"
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=gpu,
            drop_last=shuffle,
            persistent_workers=num_workers > 0,
        )
        counts = [s["num_samples"] for s in manifest["shards"]][rank::world_size]
        per_worker = [sum(counts[w :: max(num_workers, 1)]) for w in range(max(num_workers, 1))]
        if shuffle:  # an upper bound: tar order, and so each worker's share, changes per epoch
            self.steps = sum(counts) // batch_size
        else:  # exact: val reads every tar in order, each worker ends with its partial batch
            self.steps = sum(math.ceil(n / batch_size) for n in per_worker)
        if self.steps == 0:
            raise PipelineError(f"{folder}: rank {rank} gets too few samples for one batch of {batch_size}")

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
