"""`verify`: prove a shard folder is exactly what its manifest says; `check`: the part of it every
loader can afford before reading; `describe`: a short summary."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

from fastclr.shards._decode import CorruptImage, decode_image
from fastclr.shards._errors import ShardError
from fastclr.shards._format import (
    IMAGE_EXT,
    LABEL_EXT,
    MANIFEST,
    group_samples,
    index_text,
    iter_shard_paths,
    list_members,
    load_manifest,
    read_samples,
    sample_crc,
    sha256_file,
    split_member_name,
)

RAW_EXT = IMAGE_EXT["raw"]
# Hashing this many bytes of tars takes about a second: below it every loader checks the hashes.
FULL_CHECK_BYTES = 1 << 30
TAR_BLOCK = 512


def _locate_change(tar: Path, shard: dict) -> str:
    """Name the first sample whose bytes differ from the CRCs recorded at conversion."""
    samples = group_samples(list_members(tar))  # raises, naming the sample, if truncated
    expected = shard["sample_crc32"]
    with open(tar, "rb") as f:
        for n, (key, members) in enumerate(samples):
            if n >= shard["num_samples"]:
                return (
                    f"{tar}: member {members[0].name} is none of the {shard['num_samples']} samples "
                    "converted into it (added later?); reconvert the shards"
                )
            if sample_crc(f, members) != expected[8 * n : 8 * n + 8]:
                return f"{tar}: sample {key} changed since conversion (sha256 mismatch)"
    if len(samples) < shard["num_samples"]:
        last = samples[-1][0] if samples else "(none)"
        return (
            f"{tar}: truncated after sample {last} ({len(samples)} of {shard['num_samples']} "
            "samples left); reconvert the shards"
        )
    return f"{tar}: sha256 mismatch outside the sample bytes (tar headers changed)"


def _check_sample(tar: Path, key: str, parts: dict[str, bytes], manifest: dict) -> None:
    where = f"{tar}: sample {key}"
    images = [ext for ext in parts if ext in IMAGE_EXT.values()]
    if len(images) != 1:
        raise ShardError(
            f"{where}: expected one image member ({'/'.join(IMAGE_EXT.values())}), found {sorted(parts)}"
        )
    if LABEL_EXT not in parts:
        raise ShardError(f"{where}: no .{LABEL_EXT} label member")
    data = parts[images[0]]
    if images[0] == RAW_EXT:
        shape = manifest["image"]["shape"]
        if shape is None or len(data) != shape[0] * shape[1] * shape[2]:
            raise ShardError(f"{where}: raw image of {len(data)} bytes does not match shape {shape}")
    else:
        try:
            decode_image(data, manifest["image"]["channels"])
        except CorruptImage as err:
            raise ShardError(f"{where}: image does not decode ({err})") from None
    labels = {"": (parts[LABEL_EXT], manifest["num_classes"])}
    for name, extra in manifest.get("extra_labels", {}).items():
        labels[name] = (parts.get(f"{name}.{LABEL_EXT}", b""), len(extra["classes"]))
    for name, (raw, count) in labels.items():
        try:
            label = int(raw)
        except ValueError:
            raise ShardError(f"{where}: {name or 'label'} {raw[:20]!r} is not an integer") from None
        valid = 0 <= label < count if manifest["labeled"] else label == -1
        if not valid:
            expect = f"0..{count - 1}" if manifest["labeled"] else "-1 (unlabelled split)"
            raise ShardError(f"{where}: {name or 'label'} {label} outside {expect}")


def check(folder: str | Path, manifest: dict) -> None:
    """Refuse a shard folder that is not what its manifest says, before any of it is read.

    Up to FULL_CHECK_BYTES of tars this is `verify(decode=False)`: no unlisted file, every hash,
    index and sample count. Above, it checks what costs no scan: no unlisted file, each index's
    hash, and each tar's ends (its first member where the index says, nothing cut off, nothing
    appended); `fastclr shards verify` proves the rest.
    """
    folder = Path(folder)
    sizes = [(folder / s["tar"]).stat().st_size for s in manifest["shards"] if (folder / s["tar"]).is_file()]
    if sum(sizes) <= FULL_CHECK_BYTES:
        verify(folder, decode=False)
        return
    _check_unlisted(folder, manifest)
    for shard, tar, idx in iter_shard_paths(folder, manifest):
        if sha256_file(idx) != shard["sha256"]["index"]:
            raise ShardError(f"{idx}: sha256 mismatch; the index changed since conversion")
        _check_tar_ends(tar, idx.read_text().splitlines())


def _check_tar_ends(tar: Path, index: list[str]) -> None:
    """The index's first member sits where it says and the bytes after its last are the tar's zero end."""
    fields = index[1].split() if len(index) > 1 else []
    if not fields:
        raise ShardError(f"{tar}: its index lists no samples; reconvert the shards")
    first_offset, first_name = int(fields[1]), fields[3]
    ends = [int(f[i + 1]) + int(f[i + 2]) for f in map(str.split, index[1:]) for i in range(0, len(f), 4)]
    end = max(ends)  # each member is "ext offset size name"
    size = tar.stat().st_size
    with open(tar, "rb") as f:
        f.seek(max(first_offset - TAR_BLOCK, 0))
        header = f.read(TAR_BLOCK)
        f.seek(min(end, size))
        tail = f.read()
    if header[:100].rstrip(b"\0") != first_name.encode():
        raise ShardError(
            f"{tar}: its first member is not the {first_name} its index names (another tar?); reconvert"
        )
    if size < end + 2 * TAR_BLOCK:
        raise ShardError(
            f"{tar}: truncated ({size} bytes; its index reaches byte {end}); reconvert the shards"
        )
    if tail.strip(b"\0"):
        raise ShardError(
            f"{tar}: holds members its index does not list after byte {end}; reconvert the shards"
        )


def _check_unlisted(folder: Path, manifest: dict) -> None:
    listed = {name for s in manifest["shards"] for name in (s["tar"], s["index"])}
    for path in sorted(folder.iterdir()):
        if path.name not in listed and path.name != MANIFEST:
            raise ShardError(
                f"{path}: not listed in {folder / MANIFEST}; remove it (shards of "
                "another conversion must not be mixed in)"
            )


def verify(folder: str | Path, decode: bool = True) -> dict:
    """Check hashes, index against tar, every sample's members, decoding and labels.

    Raises ShardError naming the shard (and sample key where there is one) of the
    first fault; returns {"shards": n, "samples": n} when all is well.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    _check_unlisted(folder, manifest)
    total, labels = 0, Counter()
    for shard, tar, idx in iter_shard_paths(folder, manifest):
        for path in (tar, idx):
            if not path.is_file():
                raise ShardError(f"{path}: listed in the manifest but missing; reconvert")
        if sha256_file(tar) != shard["sha256"]["tar"]:
            raise ShardError(_locate_change(tar, shard))
        if sha256_file(idx) != shard["sha256"]["index"]:
            raise ShardError(f"{idx}: sha256 mismatch; the index changed since conversion")
        samples = group_samples(list_members(tar))
        expected, actual = index_text(samples).splitlines(), idx.read_text().splitlines()
        if expected != actual:
            n = next(
                (n for n, (e, a) in enumerate(zip(expected, actual, strict=False)) if e != a), len(actual)
            )
            what = "its header" if n == 0 else f"sample {samples[min(n, len(samples)) - 1][0]}"
            raise ShardError(f"{idx}: {what} disagrees with {tar.name}; reconvert the shards")
        if len(samples) != shard["num_samples"]:
            raise ShardError(f"{tar}: holds {len(samples)} samples, manifest says {shard['num_samples']}")
        for key, parts in read_samples(tar) if decode else ():
            _check_sample(tar, key, parts, manifest)
        if manifest["labeled"]:
            labels.update(_labels(tar, samples, manifest["num_classes"]))
        total += len(samples)
    if total != manifest["num_samples"]:
        raise ShardError(f"{folder}: {total} samples in shards, manifest says {manifest['num_samples']}")
    if manifest["labeled"]:
        _check_class_counts(folder, manifest, labels)
    return {"shards": len(manifest["shards"]), "samples": total}


def _labels(tar: Path, samples: list, num_classes: int) -> Counter:
    """How many samples of the tar carry each label, read by offset (nothing decoded); a label
    outside the classes is named with its sample."""
    valid = {str(c).encode(): c for c in range(num_classes)}
    found: Counter = Counter()
    with open(tar, "rb") as f:
        for key, members in samples:
            member = next((m for m in members if split_member_name(m.name)[1] == LABEL_EXT), None)
            if member is None:
                raise ShardError(f"{tar}: sample {key}: no .{LABEL_EXT} label member")
            f.seek(member.offset)
            raw = f.read(member.size).strip()
            if raw not in valid:
                shown = raw[:20].decode(errors="replace")
                raise ShardError(f"{tar}: sample {key}: label {shown} outside 0..{num_classes - 1}")
            found[valid[raw]] += 1
    return found


def _check_class_counts(folder: Path, manifest: dict, labels: Counter) -> None:
    """The manifest's per-class counts (what subsets and reports rely on) against the tars' labels."""
    actual = [labels[c] for c in range(manifest["num_classes"])]
    expected = manifest.get("class_counts")
    if expected is not None and actual != expected:
        c = next(c for c, (a, e) in enumerate(zip(actual, expected, strict=False)) if a != e)
        raise ShardError(
            f"{folder / MANIFEST}: class {manifest['classes'][c]!r} has {actual[c]} samples in the tars, "
            f"the manifest says {expected[c]} (the manifest was edited or belongs to other shards); "
            "reconvert the shards"
        )


def describe(folder: str | Path) -> str:
    """A few lines a person reads to know what a shard folder holds."""
    folder = Path(folder)
    m = load_manifest(folder)
    size = sum((folder / s[k]).stat().st_size for s in m["shards"] for k in ("tar", "index"))
    image = m["image"]
    shape = (
        "x".join(map(str, image["shape"]))
        if image["shape"]
        else (
            f"{image['min_size'][0]}x{image['min_size'][1]} .. {image['max_size'][0]}x{image['max_size'][1]}"
        )
    )
    classes = m["classes"]
    names = ", ".join(classes[:5]) + (f", ... ({len(classes)} in all)" if len(classes) > 5 else "")
    lines = [
        f"{folder}: {m['dataset']} / {m['split']}",
        f"  samples   {m['num_samples']:,} in {len(m['shards'])} shards, {size / 2**20:.1f} MiB",
        f"  images    {image['encoding']} ({', '.join(image['extensions'])}), {shape}, "
        f"{image['channels']} channel(s)",
        f"  labels    {f'{len(classes)} classes: {names}' if m['labeled'] else 'none (unlabelled)'}",
        f"  mean/std  {m['mean']} / {m['std']}",
        f"  skipped   {m['skipped']['count']} unreadable image(s)",
        *_field_lines("source", m["source"]),
    ]
    if m["subset"]:
        sub = m["subset"]
        rule = f"fraction {sub['fraction']}" if sub["fraction"] else f"{sub['per_class']} per class"
        lines.append(
            f"  subset    {rule}, seed {sub['seed']}, of {sub['parent']} "
            f"({sub['parent_num_samples']:,} samples)"
        )
    return "\n".join(lines)


def _field_lines(title: str, fields: dict) -> list[str]:
    """`  title     key: value` lines, one per field, lists joined with commas."""
    lines = []
    for n, (key, value) in enumerate(fields.items()):
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"  {title if n == 0 else '':<9} {key}: {shown}")
    return lines or [f"  {title}"]


def rebuild_index(folder: str | Path, shard: dict) -> Path:
    """Rewrite a lost DALI index from its tar; it must hash to what the manifest recorded."""
    folder = Path(folder)
    tar, idx = folder / shard["tar"], folder / shard["index"]
    text = index_text(group_samples(list_members(tar)))
    if hashlib.sha256(text.encode()).hexdigest() != shard["sha256"]["index"]:
        raise ShardError(
            f"{idx}: missing, and the index rebuilt from {tar.name} disagrees with the "
            "manifest (the tar changed); reconvert the shards"
        )
    try:
        tmp = idx.with_name(f".{idx.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, idx)
    except OSError as err:
        raise ShardError(
            f"{idx}: missing, and it cannot be rebuilt there ({err.strerror}); "
            "restore it or reconvert the shards"
        ) from None
    return idx
