"""Stratified, seeded subsets of a shard folder: label fractions and data-scale experiments."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from fastclr.shards._convert import output_folder, seal_shard
from fastclr.shards._errors import ShardError
from fastclr.shards._format import (
    LABEL_EXT,
    MANIFEST,
    iter_shard_paths,
    load_manifest,
    read_samples,
    sha256_file,
    write_json_atomic,
)
from fastclr.shards._options import SubsetConfig


def per_class_counts(class_sizes: list[int], fraction: float | None, per_class: int | None) -> list[int]:
    """How many samples each class keeps: round(fraction * n), at least 1, or exactly `per_class`."""
    if per_class is not None:
        return [per_class] * len(class_sizes)
    return [max(1, math.floor(fraction * n + 0.5)) if n else 0 for n in class_sizes]


def choose(
    labels: np.ndarray, num_classes: int, fraction: float | None, per_class: int | None, seed: int
) -> np.ndarray:
    """Sorted positions of the chosen samples; per class when labelled, uniform otherwise."""
    rng = np.random.default_rng(seed)
    if num_classes == 0 or (labels < 0).all():
        if per_class is not None:
            raise ShardError("--per-class needs labelled shards; use --fraction for unlabelled ones")
        keep = max(1, math.floor(fraction * len(labels) + 0.5))
        return np.sort(rng.permutation(len(labels))[:keep])
    positions = [np.flatnonzero(labels == c) for c in range(num_classes)]
    counts = per_class_counts([len(p) for p in positions], fraction, per_class)
    chosen = []
    for c, (pos, k) in enumerate(zip(positions, counts, strict=True)):
        if k > len(pos):
            raise ShardError(f"class {c} has only {len(pos)} samples, fewer than --per-class {k}")
        chosen.append(rng.permutation(pos)[:k])
    return np.sort(np.concatenate(chosen))


def subset(
    src: str | Path,
    out: str | Path,
    fraction: float | None = SubsetConfig.fraction,
    per_class: int | None = SubsetConfig.per_class,
    seed: int = SubsetConfig.seed,
    overwrite: bool = SubsetConfig.overwrite,
    command: list[str] | None = None,
) -> dict:
    """Copy a stratified subset of the shards in `src` (bytes unchanged) into `out`."""
    if (fraction is None) == (per_class is None):
        raise ShardError("give exactly one of --fraction or --per-class")
    if fraction is not None and not 0 < fraction <= 1:
        raise ShardError(f"--fraction {fraction} out of range; use 0 < F <= 1")
    if per_class is not None and per_class < 1:
        raise ShardError(f"--per-class {per_class} must be at least 1")
    src, out = Path(src), Path(out)
    import webdataset as wds  # here, not at the top: it imports torch (2 s) and only writing needs it

    parent = load_manifest(src)
    if out.resolve() == src.resolve():
        raise ShardError(f"--out {out} is the source folder; choose another one")
    with output_folder(out, overwrite) as partial:  # held before the parent is read: a second writer is
        # refused at once
        samples = _read_all(src, parent)
        labels = np.array([int(parts[LABEL_EXT]) for _, parts in samples])
        chosen = choose(labels, parent["num_classes"] if parent["labeled"] else 0, fraction, per_class, seed)
        # Keep the parent's shuffled order (already a seeded permutation); only thin it out.
        shard_size = parent["provenance"]["shard_size"]
        shards = []
        for shard_no, start in enumerate(range(0, len(chosen), shard_size)):
            name = f"{parent['split']}-{shard_no:06d}"
            with (
                open(partial / f"{name}.tar", "wb") as stream,
                wds.TarWriter(stream, encoder=False, mtime=0, user="fastclr", group="fastclr") as tar,
            ):
                for position in chosen[start : start + shard_size]:
                    key, parts = samples[position]
                    tar.write({"__key__": key, **parts})
            shards.append(seal_shard(partial / f"{name}.tar", partial / f"{name}.idx"))
        kept = labels[chosen]
        manifest = {
            **parent,
            "num_samples": len(chosen),
            "class_counts": (
                np.bincount(kept, minlength=parent["num_classes"]).tolist() if parent["labeled"] else None
            ),
            "shards": shards,
            # Normalisation stays the parent's, so a subset is fed exactly like its full set.
            "subset": {
                "parent": str(src.resolve()),
                "parent_manifest_sha256": sha256_file(src / MANIFEST),
                "parent_num_samples": parent["num_samples"],
                "fraction": fraction,
                "per_class": per_class,
                "seed": seed,
                "rule": "per class: floor(fraction * n + 0.5), at least 1" if fraction else "per class: K",
                "stats_from": "parent",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": command,
            },
        }
        write_json_atomic(partial / MANIFEST, manifest)
    return manifest


def _read_all(src: Path, parent: dict) -> list[tuple[str, dict[str, bytes]]]:
    """Every sample of the parent, read whole; a tar that cannot be read is a ShardError naming it."""
    samples = []
    for _, tar, _ in iter_shard_paths(src, parent):
        try:
            samples.extend(read_samples(tar))
        except OSError as err:
            raise ShardError(
                f"{tar}: cannot be read ({err.strerror or err}); check {src} with `fastclr shards verify`"
            ) from None
    return samples
