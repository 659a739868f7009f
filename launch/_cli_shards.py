"""`fastclr shards ...`: convert, subset, verify and describe shard folders (no torch imported)."""

from __future__ import annotations

import argparse
import json

from fastclr import shards


def _convert(args: argparse.Namespace) -> None:
    options = {}
    if args.source == "synthetic":
        options = {"num": args.num, "size": args.size, "classes": args.classes, "seed": args.seed}
    shards.check_output(args.out, args.overwrite, args.src)  # before reading a large dataset
    source = shards.open_source(args.source, args.src, args.split, **options)
    manifest = shards.convert(
        source,
        args.out,
        encoding=args.encoding,
        quality=args.quality,
        shard_size=args.shard_size,
        workers=args.workers,
        overwrite=args.overwrite,
        skip_corrupt=args.skip_corrupt,
        reencode=args.reencode,
        max_side=args.max_side,
        max_pixels=args.max_pixels,
        seed=args.seed,
        shuffle=not args.no_shuffle,
        progress=not args.quiet,
        command=args.argv,
    )
    skipped = manifest["skipped"]["count"]
    print(
        f"wrote {manifest['num_samples']:,} samples in {len(manifest['shards'])} shards to "
        f"{args.out} in {manifest['provenance']['seconds']:.1f} s"
        + (f" ({skipped} unreadable images skipped, listed in the manifest)" if skipped else "")
    )


def _subset(args: argparse.Namespace) -> None:
    shards.check_output(args.out, args.overwrite)
    manifest = shards.subset(
        args.dir,
        args.out,
        fraction=args.fraction,
        per_class=args.per_class,
        seed=args.seed,
        overwrite=args.overwrite,
        command=args.argv,
    )
    print(
        f"wrote {manifest['num_samples']:,} of {manifest['subset']['parent_num_samples']:,} "
        f"samples to {args.out}"
    )


def _verify(args: argparse.Namespace) -> None:
    report = shards.verify(args.dir, decode=not args.no_decode)
    print(f"{args.dir}: OK, {report['samples']:,} samples in {report['shards']} shards")


def _info(args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(shards.load_manifest(args.dir), indent=1))
    else:
        print(shards.describe(args.dir))


def add_shards(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "shards",
        help="convert datasets to WebDataset shards; subset, verify and describe them",
        description="Datasets to WebDataset shards (tar + DALI index + manifest).",
    )
    sub = parser.add_subparsers(dest="shards_command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "convert",
        help="convert a dataset (cifar10, mnist, imagefolder, ...) to shards",
        description="Convert a dataset as distributed into shuffled tar shards, a DALI "
        "index per shard and manifest.json.",
    )
    p.add_argument("source", choices=sorted(shards.SOURCES), help="the dataset's format")
    p.add_argument("--src", help="where the dataset's files are (not needed for digits, synthetic)")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--split", default="train", choices=shards.SPLITS)
    p.add_argument(
        "--encoding",
        default="auto",
        choices=shards.ENCODINGS,
        help="auto keeps JPEG/PNG files byte for byte and stores arrays as PNG",
    )
    p.add_argument("--quality", type=int, default=95, help="JPEG quality when encoding to JPEG")
    p.add_argument("--reencode", action="store_true", help="re-encode even files already in --encoding")
    p.add_argument("--max-side", type=int, help="shrink images whose longer side exceeds this many pixels")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=shards.MAX_PIXELS,
        help="refuse an image whose header declares more pixels, before decoding it (a decompression "
        f"bomb); default {shards.MAX_PIXELS:,} (8000 x 5000), below Pillow's 89M MAX_IMAGE_PIXELS, "
        "which only warns",
    )
    p.add_argument("--shard-size", type=int, default=5000, help="samples per tar")
    p.add_argument("--workers", type=int, default=1, help="processes writing shards")
    p.add_argument("--seed", type=int, default=0, help="seed of the global shuffle (and of synthetic)")
    p.add_argument("--no-shuffle", action="store_true", help="keep the source order")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard folder")
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="skip unreadable images (counted and listed in the manifest) instead of failing",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    group = p.add_argument_group("synthetic")
    group.add_argument("--num", type=int, default=1000, help="number of images")
    group.add_argument("--size", type=int, default=32, help="image side in pixels")
    group.add_argument("--classes", type=int, default=10, help="number of classes")
    p.set_defaults(run=_convert)

    p = sub.add_parser(
        "subset",
        help="stratified, seeded subset (label fractions, data scale)",
        description="Copy a stratified, seeded subset of a shard folder.",
    )
    p.add_argument("dir", help="shard folder to draw from")
    p.add_argument("--out", required=True, help="folder to create")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--fraction", type=float, help="keep this fraction of every class")
    how.add_argument("--per-class", type=int, help="keep exactly K samples of every class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard folder")
    p.set_defaults(run=_subset)

    p = sub.add_parser(
        "verify",
        help="check hashes, indexes, decoding and labels of every sample",
        description="Check a shard folder against its manifest; exits non-zero at the "
        "first fault, naming the shard and sample.",
    )
    p.add_argument("dir")
    p.add_argument("--no-decode", action="store_true", help="skip decoding images (hashes only)")
    p.set_defaults(run=_verify)

    p = sub.add_parser(
        "info", help="a short summary of a shard folder", description="Summarise a shard folder's manifest."
    )
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    p.set_defaults(run=_info)
