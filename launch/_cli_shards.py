"""`fastclr shards convert | subset | verify | info` (no torch imported); settings in shards._options."""

from __future__ import annotations

import json

from fastclr import shards
from fastclr.launch._commands import Command, register


def _convert(cfg: shards.ConvertConfig, argv: list[str]) -> None:
    options = {}
    if cfg.source == "synthetic":
        options = {"num": cfg.num, "size": cfg.size, "classes": cfg.classes, "seed": cfg.seed}
    split = cfg.chosen_split()
    shards.check_output(cfg.out, cfg.overwrite, cfg.src)  # before reading a large dataset
    source = shards.open_source(cfg.source, cfg.src, split, **options)
    manifest = shards.convert(
        source,
        cfg.out,
        encoding=cfg.encoding,
        quality=cfg.quality,
        shard_size=cfg.shard_size,
        workers=cfg.workers,
        overwrite=cfg.overwrite,
        skip_corrupt=cfg.skip_corrupt,
        reencode=cfg.reencode,
        max_side=cfg.max_side,
        max_pixels=cfg.max_pixels,
        seed=cfg.seed,
        shuffle=cfg.shuffle,
        progress=not cfg.quiet,
        command=argv,
    )
    skipped = manifest["skipped"]["count"]
    print(
        f"wrote {manifest['num_samples']:,} samples in {len(manifest['shards'])} shards to "
        f"{cfg.out} in {manifest['provenance']['seconds']:.1f} s"
        + (f" ({skipped} unreadable images skipped, listed in the manifest)" if skipped else "")
    )
    narrowed = manifest["provenance"]["narrowed_from_16_bits"]
    if narrowed:
        print(f"note: {narrowed:,} images of 16 bits a channel stored in 8 (their high bytes, measured so)")


def _subset(cfg: shards.SubsetConfig, argv: list[str]) -> None:
    shards.check_output(cfg.out, cfg.overwrite)
    manifest = shards.subset(
        cfg.dir,
        cfg.out,
        fraction=cfg.fraction,
        per_class=cfg.per_class,
        seed=cfg.seed,
        overwrite=cfg.overwrite,
        command=argv,
    )
    print(
        f"wrote {manifest['num_samples']:,} of {manifest['subset']['parent_num_samples']:,} "
        f"samples to {cfg.out}"
    )


def _verify(cfg: shards.VerifyConfig, argv: list[str]) -> None:
    report = shards.verify(cfg.dir, decode=cfg.decode)
    print(f"{cfg.dir}: OK, {report['samples']:,} samples in {report['shards']} shards")


def _info(cfg: shards.InfoConfig, argv: list[str]) -> None:
    if cfg.json:
        print(json.dumps(shards.load_manifest(cfg.dir), indent=1))
    else:
        print(shards.describe(cfg.dir))


register(
    Command(
        "shards convert",
        shards.ConvertConfig,
        _convert,
        "convert a dataset (cifar10, mnist, imagefolder, ...) to shuffled tar shards, a DALI index per "
        "shard and manifest.json",
        positional=("source",),
    )
)
register(
    Command(
        "shards subset",
        shards.SubsetConfig,
        _subset,
        "copy a stratified, seeded subset of a shard folder (label fractions, data scale)",
        positional=("dir",),
    )
)
register(
    Command(
        "shards verify",
        shards.VerifyConfig,
        _verify,
        "check a shard folder against its manifest (hashes, indexes, decoding, labels); exits non-zero "
        "at the first fault, naming the shard and sample",
        positional=("dir",),
    )
)
register(
    Command("shards info", shards.InfoConfig, _info, "a short summary of a shard folder", positional=("dir",))
)
