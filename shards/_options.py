"""The settings of `fastclr shards convert | subset | verify | info`, one dataclass each.

They are the one place these commands' defaults and help are written: `convert()` and `subset()`
take their keyword defaults from them, and the command line, `--help` and docs/config.md are
generated from them. Ranges are checked by `convert()` and `subset()` themselves, so library
callers get the same one-line errors as the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastclr.config import setting
from fastclr.shards._datasets import SOURCES
from fastclr.shards._errors import ShardError
from fastclr.shards._sources import SPLITS, folder_split

ENCODINGS = ("auto", "jpeg", "png", "raw")
# Pixels an image's header may declare before it is refused undecoded. Pillow's MAX_IMAGE_PIXELS
# (89M) only warns, and a few hundred KB of PNG declaring 12000 x 12000 then took 7.8 GB to convert;
# 40M (8000 x 5000, 120 MB per RGB copy) is above any ImageNet or Tiny-ImageNet image.
MAX_PIXELS = 40_000_000


@dataclass
class ConvertConfig:
    source: str = setting(help="the dataset's format", choices=tuple(sorted(SOURCES)))
    out: str = setting(help="folder to create")
    src: str | None = setting(None, "where the dataset's files are (not needed for digits, synthetic)")
    split: str = setting(
        "auto",
        "which split of the dataset, recorded in the manifest; auto: imagefolder's from the --src "
        "folder's name (train, val, test), train for the other sources",
        choices=("auto", *SPLITS),
    )
    encoding: str = setting(
        "auto", "auto keeps JPEG/PNG files byte for byte and stores arrays as PNG", choices=ENCODINGS
    )
    quality: int = setting(95, "JPEG quality when encoding to JPEG")
    reencode: bool = setting(False, "re-encode even files already in the chosen encoding")
    max_side: int | None = setting(None, "shrink images whose longer side exceeds this many pixels")
    max_pixels: int | None = setting(
        MAX_PIXELS,
        "refuse an image whose header declares more pixels, before decoding it (a decompression bomb); "
        f"default {MAX_PIXELS:,} (8000 x 5000), below Pillow's 89M MAX_IMAGE_PIXELS, which only warns",
    )
    shard_size: int = setting(5000, "samples per tar")
    workers: int = setting(1, "processes writing shards")
    seed: int = setting(0, "seed of the global shuffle (and of synthetic images)")
    shuffle: bool = setting(True, "shuffle the samples across shards (--no-shuffle keeps the source order)")
    overwrite: bool = setting(False, "replace an existing shard folder")
    skip_corrupt: bool = setting(
        False, "skip unreadable images (counted and listed in the manifest) instead of failing"
    )
    quiet: bool = setting(False, "no progress bar")
    num: int = setting(1000, "synthetic: number of images")
    size: int = setting(32, "synthetic: image side in pixels")
    classes: int = setting(10, "synthetic: number of classes")

    def chosen_split(self) -> str:
        """`split`, with auto made: an image folder's split is what its name says (refused if it says
        none: a test folder must not be recorded as train), the other sources' is train."""
        if self.split != "auto":
            return self.split
        if self.source != "imagefolder" or not Path(self.src or "").is_dir():
            return "train"  # a missing --src is named by the reader
        split = folder_split(self.src or "")
        if split is None:
            raise ShardError(
                f"--src {self.src}: its name does not say which split it is (train, val or test); "
                "add --split train (or val, test, unlabeled)"
            )
        return split


@dataclass
class SubsetConfig:
    dir: str = setting(help="shard folder to draw from")
    out: str = setting(help="folder to create")
    fraction: float | None = setting(None, "keep this fraction of every class (or give per_class)")
    per_class: int | None = setting(None, "keep exactly this many samples of every class")
    seed: int = setting(0, "seed of the draw")
    overwrite: bool = setting(False, "replace an existing shard folder")


@dataclass
class VerifyConfig:
    dir: str = setting(help="shard folder to check against its manifest")
    decode: bool = setting(True, "decode every image (--no-decode: hashes, indexes and labels only)")


@dataclass
class InfoConfig:
    dir: str = setting(help="shard folder to describe")
    json: bool = setting(False, "print the whole manifest")
