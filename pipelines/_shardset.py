"""A shard folder opened once: manifest loaded, missing indexes rebuilt, contents checked.

    train = open_shards("data/cifar10-train")   # the one check of the run
    loader = create_loader("pretrain", train, batch_size=512, size=32)
    knn = create_loader("val", train, batch_size=512, size=32)   # no second check

The check (`shards.check`: every tar's sha256 and every member, for sets up to 1 GiB) is what
stands between DALI and a changed, cut or foreign tar: DALI reads whatever bytes an index points at.
Every loader takes a ShardSet or a folder, which it opens itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastclr import shards
from fastclr.pipelines._errors import PipelineError

MIN_STD = 1 / 255  # a constant channel (std 0) must not divide by 0


@dataclass(frozen=True, eq=False)
class ShardSet:
    """An opened, checked shard folder: what the graphs read and what callers ask of it."""

    folder: Path  # as the user named it: every message names it so
    manifest: dict
    tars: tuple[str, ...]
    indexes: tuple[str, ...]
    image_ext: str  # "jpg", "png", "rgb" or "jpg;png"
    raw_shape: tuple[int, int, int] | None  # HWC of raw ("rgb") images
    channels: int  # channels stored
    mean: tuple[float, ...]  # per channel, pixel values in [0, 1]
    std: tuple[float, ...]

    @property
    def num_samples(self) -> int:
        return self.manifest["num_samples"]

    @property
    def labeled(self) -> bool:
        return self.manifest["labeled"]

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    def stats(self, channels: int) -> tuple[list[float], list[float]]:
        """Mean and std for `channels` output channels (a gray set's are repeated for RGB)."""
        mean, std = list(self.mean), list(self.std)
        if len(mean) != channels:
            mean, std = mean[:1] * channels, std[:1] * channels
        return mean, std

    def explain(self, reason: str) -> str:
        """One line for a failure while reading: the faulty shard and sample, found by a full
        `shards.verify` (an error path, so its cost is fine); else `reason`."""
        try:
            shards.verify(self.folder)
        except shards.ShardError as fault:
            return str(fault)
        return f"{self.folder}: {reason}; the shards verify clean"


def open_shards(folder: str | Path | ShardSet) -> ShardSet:
    """Open and check a shard folder (a ShardSet is returned as it is); PipelineError names the fault."""
    if isinstance(folder, ShardSet):
        return folder
    folder = Path(folder)
    try:
        manifest = shards.load_manifest(folder)
        if manifest["num_samples"] == 0 or not manifest["shards"]:
            raise shards.ShardError(f"{folder}: the manifest lists no samples; nothing to read")
        for shard in manifest["shards"]:
            if not (folder / shard["tar"]).is_file():
                raise shards.ShardError(
                    f"{folder / shard['tar']}: listed in the manifest but missing; reconvert or restore it"
                )
            if not (folder / shard["index"]).is_file():
                shards.rebuild_index(folder, shard)
        shards.check(folder, manifest)
    except shards.ShardError as err:
        raise PipelineError(str(err)) from None
    image = manifest["image"]
    return ShardSet(
        folder=folder,
        manifest=manifest,
        tars=tuple(str(folder / s["tar"]) for s in manifest["shards"]),
        indexes=tuple(str(folder / s["index"]) for s in manifest["shards"]),
        image_ext=";".join(image["extensions"]),
        raw_shape=tuple(image["shape"]) if image["encoding"] == "raw" else None,
        channels=image["channels"],
        mean=tuple(manifest["mean"]),
        std=tuple(max(s, MIN_STD) for s in manifest["std"]),
    )
