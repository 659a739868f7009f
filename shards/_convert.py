"""Write a `Source` as shuffled tar shards, a DALI index per tar and a manifest.

Everything is written into a hidden `.<out>.partial` folder beside `out` and
renamed into place only once the manifest is complete, so a killed conversion
never leaves anything that looks finished; a rerun deletes the leftovers. The
writer holds `.<out>.lock` beside `out` throughout: a second conversion or
subset into the same `out` is refused while the first runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastclr.files import FolderLock, write_advice
from fastclr.progress import progress as progress_bar
from fastclr.shards._decode import CorruptImage, TooLarge, decode_image, encode_pixels, shrink
from fastclr.shards._errors import ShardError
from fastclr.shards._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_EXT,
    LABEL_EXT,
    MANIFEST,
    group_samples,
    index_text,
    list_members,
    sample_crc,
    sample_key,
    sha256_file,
    write_json_atomic,
)
from fastclr.shards._options import ENCODINGS, MAX_PIXELS, ConvertConfig
from fastclr.shards._sources import Sample, Source


@dataclass(frozen=True)
class Settings:
    encoding: str
    quality: int
    reencode: bool
    skip_corrupt: bool
    max_side: int | None = None
    max_pixels: int | None = MAX_PIXELS


def encode_sample(sample: Sample, channels: int, settings: Settings) -> tuple[str, bytes, np.ndarray, bool]:
    """(image extension, payload, pixels, narrowed from 16 bits); file bytes are kept as they are
    unless asked otherwise (or 16-bit: stored as the 8-bit pixels measured)."""
    if isinstance(sample.image, np.ndarray):
        pixels, source_encoding, data, narrowed = sample.image, None, None, False
    else:
        pixels, source_encoding, narrowed = decode_image(sample.image, channels, settings.max_pixels)
        data = sample.image
    if settings.max_side and max(pixels.shape[:2]) > settings.max_side:
        pixels, data = shrink(pixels, settings.max_side), None  # resized pixels must be encoded anew
    target = settings.encoding
    if target == "auto":
        target = source_encoding or "png"
    if data is not None and target == source_encoding and not settings.reencode:
        return IMAGE_EXT[target], data, pixels, narrowed
    return IMAGE_EXT[target], encode_pixels(pixels, target, settings.quality), pixels, narrowed


# Set in the parent before forking workers, so the source is shared, never pickled.
_JOB: tuple[Source, list[np.ndarray], Path, str, Settings] | None = None


def _write_shard(shard_no: int) -> dict:
    source, plan, folder, prefix, settings = _JOB
    import webdataset as wds  # here, not at the top: it imports torch (2 s) and only writing needs it

    name = f"{prefix}-{shard_no:06d}"
    tar_path, idx_path = folder / f"{name}.tar", folder / f"{name}.idx"
    channel_sum = np.zeros(source.channels, np.int64)
    channel_sq = np.zeros(source.channels, np.int64)
    class_counts = np.zeros(max(len(source.classes), 1), np.int64)
    shapes: set[tuple[int, ...]] = set()
    extensions: set[str] = set()
    skipped, pixel_count, narrowed_count = [], 0, 0
    with open(tar_path, "wb") as stream:
        with wds.TarWriter(stream, encoder=False, mtime=0, user="fastclr", group="fastclr") as tar:
            for index in plan[shard_no]:
                sample = source.get(int(index))
                try:
                    ext, payload, pixels, narrowed = encode_sample(sample, source.channels, settings)
                except (TooLarge, CorruptImage) as err:
                    if not settings.skip_corrupt:
                        what, fix = (
                            (str(err), "remove it, raise --max-pixels if it is genuine")
                            if isinstance(err, TooLarge)
                            else (f"not a readable image ({err})", "fix or remove it")
                        )
                        raise ShardError(
                            f"{sample.origin}: {what}; {fix}, or pass --skip-corrupt to skip and count it"
                        ) from None
                    skipped.append({"origin": sample.origin, "error": str(err)})
                    continue
                if source.labeled and not 0 <= sample.label < len(source.classes):
                    raise ShardError(
                        f"{sample.origin}: label {sample.label} outside 0.."
                        f"{len(source.classes) - 1}; fix the labels or the class list"
                    )
                record = {
                    "__key__": sample_key(int(index)),
                    ext: payload,
                    LABEL_EXT: str(sample.label).encode(),
                }
                record.update({f"{k}.{LABEL_EXT}": str(v).encode() for k, v in sample.extra.items()})
                tar.write(record)
                flat = pixels.reshape(-1, source.channels).astype(np.int64)
                channel_sum += flat.sum(0)
                channel_sq += (flat * flat).sum(0)
                pixel_count += len(flat)
                shapes.add(pixels.shape if pixels.ndim == 3 else (*pixels.shape, 1))
                extensions.add(ext)
                narrowed_count += narrowed
                if source.labeled:
                    class_counts[sample.label] += 1
        stream.flush()
        os.fsync(stream.fileno())
    return {
        "shard": seal_shard(tar_path, idx_path),
        "channel_sum": channel_sum,
        "channel_sq": channel_sq,
        "pixel_count": pixel_count,
        "class_counts": class_counts,
        "shapes": shapes,
        "extensions": extensions,
        "skipped": skipped,
        "narrowed": narrowed_count,
    }


def seal_shard(tar_path: Path, idx_path: Path) -> dict:
    """Write the DALI index of a finished tar; return its manifest entry (counts, hashes, CRCs)."""
    samples = group_samples(list_members(tar_path))
    idx_path.write_text(index_text(samples))
    with open(tar_path, "rb") as f:
        crcs = "".join(sample_crc(f, members) for _, members in samples)
    return {
        "tar": tar_path.name,
        "index": idx_path.name,
        "num_samples": len(samples),
        "sha256": {"tar": sha256_file(tar_path), "index": sha256_file(idx_path)},
        "sample_crc32": crcs,
    }


def check_output(out: str | Path, overwrite: bool, src: str | Path | None = None) -> None:
    """Refuse to clobber an existing folder unless asked, and never one that is not ours; refuse an
    output inside the dataset it is made from (its tars would be read as part of the data next time)
    or inside a shard folder (anything added there makes `verify` and every loader refuse it)."""
    out = Path(out)
    inside = Path(os.path.abspath(out)).resolve()
    if src is not None and Path(src).is_dir():
        root = Path(os.path.abspath(src)).resolve()
        if inside == root or root in inside.parents:
            raise ShardError(
                f"--out {out} is inside --src {src}; choose an --out outside the dataset's folder"
            )
    shard_set = next((p for p in inside.parents if (p / MANIFEST).is_file()), None)
    if shard_set is not None:
        raise ShardError(
            f"--out {out} is inside the shard folder {shard_set}: anything added there makes `fastclr "
            "shards verify` and every loader refuse it; choose an --out outside it"
        )
    if out.exists():
        if not overwrite:
            raise ShardError(
                f"--out {out} already exists; pass --overwrite to replace it or choose another folder"
            )
        if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file()):
            raise ShardError(
                f"--out {out} exists and is not a fastclr shard folder; "
                "refusing to overwrite it, choose another folder"
            )


class _OutputLock(FolderLock):
    """The lock of a shard folder being written (`.NAME.lock` beside it), refused with ShardError."""

    error = ShardError


@contextlib.contextmanager
def output_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh hidden partial folder to write `out` in, under out's lock: published as `out` when the
    block ends, removed if it raises; a failed write is one ShardError.

    A second writer of `out` is refused at once, naming the first: two conversions into one folder
    used to share the partial folder, and one published the other's half-written tars."""
    lock = _OutputLock(out, what="--out", beside=True)
    try:
        lock.acquire()
    except OSError as err:
        raise ShardError(
            f"--out {out}: cannot write there ({err.strerror}); choose a folder you can write to"
        ) from None
    try:
        check_output(out, overwrite)
        partial = out.parent / f".{out.name}.partial"
        try:
            if partial.exists():
                shutil.rmtree(partial)  # leftovers of an interrupted run: the lock says none goes on
            partial.mkdir()
            yield partial
            publish_output(partial, out)
        except OSError as err:  # reads are ShardErrors already: this is the output (full disk, permissions)
            shutil.rmtree(partial, ignore_errors=True)
            raise ShardError(
                f"--out {out}: cannot write the shards ({err.strerror or err}); nothing was left behind; "
                f"{write_advice(err, out.parent)} or choose another --out, then run the same command again"
            ) from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        lock.release()


def publish_output(partial: Path, out: Path) -> None:
    """Swap the finished folder into place; an old one is removed only after."""
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    if old.exists():
        shutil.rmtree(old)


def convert(
    source: Source,
    out: str | Path,
    encoding: str = ConvertConfig.encoding,
    quality: int = ConvertConfig.quality,
    shard_size: int = ConvertConfig.shard_size,
    workers: int = ConvertConfig.workers,
    overwrite: bool = ConvertConfig.overwrite,
    skip_corrupt: bool = ConvertConfig.skip_corrupt,
    reencode: bool = ConvertConfig.reencode,
    max_side: int | None = ConvertConfig.max_side,
    max_pixels: int | None = ConvertConfig.max_pixels,
    seed: int = ConvertConfig.seed,
    shuffle: bool = ConvertConfig.shuffle,
    progress: bool = not ConvertConfig.quiet,
    command: list[str] | None = None,
) -> dict:
    """Convert `source` into shards in `out`; returns the manifest.

    Args:
        encoding: `auto` keeps JPEG/PNG files byte for byte and stores arrays as PNG;
            `jpeg`, `png` or `raw` (HWC uint8 bytes, needs one image size) force one.
        quality: JPEG quality when encoding to JPEG.
        shard_size: samples per tar.
        workers: processes that write shards in parallel.
        reencode: re-encode files even when they already are in the target encoding.
        max_side: shrink images whose longer side exceeds this (DALI's buffers grow to the
            largest image, and nvJPEG can fail on huge ones).
        max_pixels: refuse (or with skip_corrupt, skip) an image whose header declares more
            pixels, before decoding it; None: no limit but Pillow's.
        seed, shuffle: the global sample order is a seeded permutation (DALI only
            shuffles within a buffer, so shards must be pre-shuffled).
    """
    global _JOB
    if encoding not in ENCODINGS:
        raise ShardError(f"unknown --encoding {encoding!r}; choose one of: {', '.join(ENCODINGS)}")
    if not 1 <= quality <= 100:
        raise ShardError(f"--quality {quality} out of range; use 1..100")
    if shard_size < 1 or workers < 1:
        raise ShardError("--shard-size and --workers must be at least 1")
    if len(source) == 0:
        raise ShardError(f"source {source.name} ({source.split}) holds no images")
    if max_side is not None and max_side < 8:
        raise ShardError(f"--max-side {max_side} is too small; use at least 8 pixels")
    if max_pixels is not None and max_pixels < 64:
        raise ShardError(f"--max-pixels {max_pixels} is too small; use at least 64")
    out = Path(out)
    started = time.time()
    order = np.random.default_rng(seed).permutation(len(source)) if shuffle else np.arange(len(source))
    plan = [order[i : i + shard_size] for i in range(0, len(order), shard_size)]
    settings = Settings(encoding, quality, reencode, skip_corrupt, max_side, max_pixels)
    with output_folder(out, overwrite) as partial:
        _JOB = (source, plan, partial, source.split, settings)
        try:
            results: list[dict] = []
            desc = f"{source.name}/{source.split}"
            with progress_bar(total=len(source), unit="img", desc=desc, enabled=progress) as bar:
                if workers == 1:
                    shard_results = map(_write_shard, range(len(plan)))
                else:
                    pool = multiprocessing.get_context("fork").Pool(workers)
                    shard_results = pool.imap(_write_shard, range(len(plan)))
                try:
                    for result in shard_results:
                        results.append(result)
                        bar.update(result["shard"]["num_samples"] + len(result["skipped"]))
                finally:
                    if workers > 1:
                        pool.terminate()
            manifest = _manifest(
                source, results, settings, shard_size, seed, shuffle, command, time.time() - started
            )
            write_json_atomic(partial / MANIFEST, manifest)
        finally:
            _JOB = None
    return manifest


def _manifest(
    source: Source,
    results: list[dict],
    settings: Settings,
    shard_size: int,
    seed: int,
    shuffle: bool,
    command: list[str] | None,
    seconds: float,
) -> dict:
    total = sum(r["shard"]["num_samples"] for r in results)
    skipped = [s for r in results for s in r["skipped"]]
    if total == 0:
        raise ShardError(
            f"source {source.name}: every image was unreadable ({len(skipped)} skipped); "
            f"first: {skipped[0]['origin']}"
        )
    shapes = set().union(*(r["shapes"] for r in results))
    extensions = sorted(set().union(*(r["extensions"] for r in results)))
    if settings.encoding == "raw" and len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        raise ShardError(
            f"--encoding raw needs one image size, found {a} and {b}; use --encoding png or jpeg"
        )
    pixels = sum(r["pixel_count"] for r in results)
    mean = sum(r["channel_sum"] for r in results) / (255.0 * pixels)
    mean_sq = sum(r["channel_sq"] for r in results) / (255.0**2 * pixels)
    std = np.sqrt(np.maximum(mean_sq - mean**2, 0))
    encoding = {v: k for k, v in IMAGE_EXT.items()}[extensions[0]] if len(extensions) == 1 else "mixed"
    heights = [s[0] for s in shapes]
    widths = [s[1] for s in shapes]
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "dataset": source.name,
        "split": source.split,
        "labeled": source.labeled,
        "classes": source.classes,
        "num_classes": len(source.classes),
        "extra_labels": {k: {"classes": v} for k, v in source.extra_classes.items()},
        "num_samples": total,
        "class_counts": (sum(r["class_counts"] for r in results).tolist() if source.labeled else None),
        "image": {
            "encoding": encoding,
            "extensions": extensions,
            "shape": list(next(iter(shapes))) if len(shapes) == 1 else None,
            "channels": source.channels,
            "min_size": [min(heights), min(widths)],
            "max_size": [max(heights), max(widths)],
        },
        # Per channel, of pixel values scaled to [0, 1].
        "mean": [round(float(m), 6) for m in mean],
        "std": [round(float(s), 6) for s in std],
        "shards": [r["shard"] for r in results],
        "skipped": {"count": len(skipped), "samples": skipped},
        "source": {"name": source.name, **source.provenance},
        "subset": None,
        "provenance": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(seconds, 2),
            "command": command,
            "encoding_requested": settings.encoding,
            "quality": settings.quality,
            "reencode": settings.reencode,
            "max_side": settings.max_side,
            "max_pixels": settings.max_pixels,
            # images of 16 bits a channel, stored as their high bytes (shards/_decode.py)
            "narrowed_from_16_bits": sum(r["narrowed"] for r in results),
            "skip_corrupt": settings.skip_corrupt,
            "shard_size": shard_size,
            "shuffled": shuffle,
            "seed": seed,
        },
    }
