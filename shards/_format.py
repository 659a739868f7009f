"""The on-disk format: sample keys, the DALI index, tar member listing, the manifest.

A shard folder holds `<split>-000000.tar`, `<split>-000000.idx` beside each tar
(DALI's index format v1.2, so DALI never scans), and `manifest.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastclr.shards._errors import ShardError
from fastclr.shards._sources import looks_like_image_folder

MANIFEST = "manifest.json"
FORMAT_NAME = "fastclr-shards"
FORMAT_VERSION = 1
INDEX_VERSION = "v1.2"
KEY_DIGITS = 8
# Extension of the image member for each encoding; raw is HWC uint8 bytes.
IMAGE_EXT = {"jpeg": "jpg", "png": "png", "raw": "rgb"}
LABEL_EXT = "cls"
UNLABELED = -1


def sample_key(index: int) -> str:
    """Zero-padded source index: no dots, so webdataset and DALI split it right."""
    return f"{index:0{KEY_DIGITS}d}"


def split_member_name(name: str) -> tuple[str, str]:
    """`00000012.coarse.cls` -> (`00000012`, `coarse.cls`), as webdataset and DALI split it."""
    base = name.rsplit("/", 1)[-1]
    dot = base.find(".")
    if dot <= 0:
        return base, ""
    return base[:dot], base[dot + 1 :]


@dataclass(frozen=True)
class Member:
    """One regular file inside a tar: its name, data offset and size."""

    name: str
    offset: int
    size: int


def list_members(tar_path: Path) -> list[Member]:
    """Every regular file in a tar, in order; a damaged tar raises ShardError naming where."""
    members: list[Member] = []
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    raise ShardError(
                        f"{tar_path}: member {info.name!r} is not a regular file; "
                        "shards hold only files, rebuild it with `fastclr shards convert`"
                    )
                members.append(Member(info.name, info.offset_data, info.size))
    except tarfile.TarError as err:
        last = split_member_name(members[-1].name)[0] if members else "(none)"
        raise ShardError(
            f"{tar_path}: damaged or truncated tar after sample {last} ({err}); "
            "rebuild it with `fastclr shards convert`"
        ) from None
    size = tar_path.stat().st_size
    for member in members:
        if member.offset + member.size > size:
            key = split_member_name(member.name)[0]
            raise ShardError(
                f"{tar_path}: truncated inside sample {key} (member {member.name}); "
                "rebuild it with `fastclr shards convert`"
            )
    return members


def group_samples(members: list[Member]) -> list[tuple[str, list[Member]]]:
    """Consecutive members with the same key form one sample, as DALI reads them."""
    samples: list[tuple[str, list[Member]]] = []
    for member in members:
        key, _ = split_member_name(member.name)
        if samples and samples[-1][0] == key:
            samples[-1][1].append(member)
        else:
            samples.append((key, [member]))
    return samples


def index_text(samples: list[tuple[str, list[Member]]]) -> str:
    """DALI's webdataset index (what its wds2idx writes): one line per sample."""
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    for _, members in samples:
        lines.append(
            " ".join(f"{split_member_name(m.name)[1]} {m.offset} {m.size} {m.name}" for m in members)
        )
    return "\n".join(lines) + "\n"


def sample_crc(tar_file, members: list[Member]) -> str:
    """CRC32 over a sample's member bytes: lets verify name the sample a bad byte is in."""
    crc = 0
    for member in members:
        tar_file.seek(member.offset)
        crc = zlib.crc32(tar_file.read(member.size), crc)
    return f"{crc:08x}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, obj: object) -> None:
    """Write to a temp name, fsync, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_manifest(folder: str | Path) -> dict:
    """Read and check `manifest.json`; errors say which folder and what to do."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ShardError(f"{folder}: no such shard folder; make one with `fastclr shards convert`")
    if not path.is_file():
        if looks_like_image_folder(folder):
            out = folder.with_name(folder.name + "-shards")
            raise ShardError(
                f"{folder} holds image files, not shards; make shards of it with `fastclr shards convert "
                f"imagefolder --src {folder} --out {out}` and pass that folder"
            )
        if (folder.parent / f".{folder.name}.partial").exists():
            raise ShardError(
                f"{path}: missing, so {folder} is not a finished shard folder (a conversion into it "
                "was interrupted); rerun `fastclr shards convert`"
            )
        raise ShardError(
            f"{path}: missing, so {folder} is not a finished shard folder; pass the --out folder "
            "of `fastclr shards convert`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ShardError(f"{path}: not valid JSON ({err}); rerun `fastclr shards convert`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ShardError(f"{path}: not a fastclr shard manifest; rerun `fastclr shards convert`")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardError(
            f"{path}: manifest version {manifest.get('version')!r}, this fastclr reads "
            f"version {FORMAT_VERSION}; convert the data again with this version"
        )
    return manifest


def iter_shard_paths(folder: Path, manifest: dict) -> Iterator[tuple[dict, Path, Path]]:
    """(shard entry, tar path, idx path) for each shard the manifest lists."""
    for shard in manifest["shards"]:
        yield shard, folder / shard["tar"], folder / shard["index"]


def read_samples(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each sample of a shard, in order."""
    samples = group_samples(list_members(tar_path))
    with open(tar_path, "rb") as f:
        for key, members in samples:
            parts = {}
            for member in members:
                f.seek(member.offset)
                parts[split_member_name(member.name)[1]] = f.read(member.size)
            yield key, parts
