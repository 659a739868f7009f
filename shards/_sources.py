"""What a dataset reader makes: a random-access `Source` of `Sample`s, and the registry of readers.

A source yields samples by index (so conversion workers can each take whole
shards) and never writes anything. Register a reader with `@register("name")`;
the readers of the supported datasets are in `_datasets.py`, which fills `SOURCES`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastclr.shards._errors import ShardError

SPLITS = ("train", "val", "test", "unlabeled")
# An image folder's split by its name (ImageNet's and Tiny-ImageNet's `train`/`val`, most others').
FOLDER_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"}


@dataclass
class Sample:
    """One image: encoded file bytes or a HWC/HW uint8 array, its label and where it came from."""

    image: bytes | np.ndarray
    label: int
    origin: str
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class Source:
    """A dataset split ready to convert: `get(i)` returns sample i of `len(self)`."""

    name: str
    split: str
    classes: list[str]
    channels: int
    labeled: bool
    get: Callable[[int], Sample]
    size: int
    extra_classes: dict[str, list[str]] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.size


SOURCES: dict[str, Callable[..., Source]] = {}


def register(name: str):
    def wrap(fn: Callable[..., Source]) -> Callable[..., Source]:
        SOURCES[name] = fn
        return fn

    return wrap


def looks_like_image_folder(folder: Path, limit: int = 200) -> bool:
    """Image files in `folder` or its subfolders (the first `limit` entries of each are looked at)."""
    if not folder.is_dir():
        return False
    entries = [p for _, p in zip(range(limit), folder.iterdir(), strict=False)]
    subfolders = [p for p in entries if p.is_dir()]
    for path in entries + [q for d in subfolders for _, q in zip(range(limit), d.iterdir(), strict=False)]:
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            return True
    return False


def folder_split(folder: str | Path) -> str | None:
    """The split an image folder's name says (`photos/val` -> val), or None."""
    return FOLDER_SPLITS.get(Path(folder).name.lower())


def imagefolder_hint(folder: Path) -> str:
    """`; ... holds image files: ...` for an error about an image tree where another format belongs."""
    if not looks_like_image_folder(folder):
        return ""
    out = folder.with_name(folder.name + "-shards")
    split = "" if folder_split(folder) else " --split train"  # its name does not say
    command = f"fastclr shards convert imagefolder --src {folder} --out {out}{split}"
    return f"; {folder} holds image files: convert them with `{command}`"


def open_source(name: str, src: str | Path | None, split: str, **options) -> Source:
    """Open dataset `name` at `src` for `split`; unknown names list the valid ones."""
    if name not in SOURCES:
        raise ShardError(f"unknown source {name!r}; choose one of: {', '.join(sorted(SOURCES))}")
    if split not in SPLITS:
        raise ShardError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if name not in ("digits", "synthetic"):
        if src is None:
            raise ShardError(f"source {name} needs --src PATH (where the files are)")
        src = Path(src)
        if not src.exists():
            raise ShardError(f"--src {src}: no such file or folder; point it at the {name} files")
    return SOURCES[name](src, split, **options)


def check_split(name: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ShardError(f"{name} has no {split!r} split; choose one of: {', '.join(allowed)}")


def check_class_names(classes: list[str], where: str) -> None:
    """Class names are printed one a line (`shards info`) and key per-class results: refuse a name
    that is empty, holds a control character (a newline, a tab) or is given twice."""
    seen = set()
    for name in classes:
        if not name or any(unicodedata.category(ch) == "Cc" for ch in name):
            problem = "is empty" if not name else "holds a control character (a newline or a tab?)"
            raise ShardError(f"{where}: class name {name!r} {problem}; rename it")
        if name in seen:
            raise ShardError(f"{where}: class name {name!r} is given twice; give each class its own name")
        seen.add(name)


def printable(text: str) -> str:
    """`text` with control characters escaped (`a\\nb`), for a name shown in a line of output."""
    return "".join(
        ch.encode("unicode_escape").decode() if unicodedata.category(ch) == "Cc" else ch for ch in text
    )


def array_source(
    name: str,
    split: str,
    images: np.ndarray,
    labels: np.ndarray | None,
    classes: list[str],
    origin: str,
    extra: dict[str, tuple[np.ndarray, list[str]]] | None = None,
    provenance: dict | None = None,
) -> Source:
    """A source over an in-memory (N, H, W[, C]) uint8 array; unlabeled when labels is None."""
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise ShardError(
            f"{origin}: expected uint8 images of shape (N, H, W[, C]), got {images.dtype} {images.shape}"
        )
    channels = 1 if images.ndim == 3 else images.shape[3]
    if channels not in (1, 3):
        raise ShardError(f"{origin}: images have {channels} channels; fastclr stores 1 or 3")
    extra = extra or {}
    for names in [classes, *(names for _, names in extra.values())]:
        check_class_names(names, origin)
    labeled = labels is not None and split != "unlabeled"

    def get(i: int) -> Sample:
        image = images[i]
        if image.ndim == 3 and channels == 1:
            image = image[:, :, 0]
        return Sample(
            image=np.ascontiguousarray(image),
            label=int(labels[i]) if labeled else -1,
            origin=f"{origin}[{i}]",
            extra={k: int(v[i]) for k, (v, _) in extra.items()},
        )

    return Source(
        name=name,
        split=split,
        classes=classes,
        channels=channels,
        labeled=labeled,
        get=get,
        size=len(images),
        extra_classes={k: names for k, (_, names) in extra.items()},
        provenance=provenance or {},
    )


def file_source(
    name: str, split: str, paths: list[Path], labels: list[int], classes: list[str], root: Path
) -> Source:
    """A source over encoded image files; their bytes are kept as they are where possible."""
    labeled = split != "unlabeled"
    check_class_names(classes, str(root))

    def get(i: int) -> Sample:
        origin = printable(str(paths[i]))  # named in error lines and the manifest's skipped list
        try:
            data = paths[i].read_bytes()
        except OSError as err:
            raise ShardError(f"{origin}: cannot read ({err.strerror})") from None
        return Sample(image=data, label=labels[i] if labeled else -1, origin=origin)

    return Source(
        name=name,
        split=split,
        classes=classes,
        channels=3,
        labeled=labeled,
        get=get,
        size=len(paths),
        provenance={"root": str(root)},
    )
