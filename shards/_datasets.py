"""The dataset readers, registered by name (`@register("npz")`) so `fastclr shards convert NAME` and
`open_source(NAME, ...)` find them: image folders, `.npz` arrays, scikit-learn's digits and a
synthetic generator here, the binary formats (CIFAR, MNIST, STL-10) in `_datasets_binary.py`.
Importing this module registers them all and fills `SOURCES`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastclr.shards import _datasets_binary  # noqa: F401 - registers cifar10, cifar100, mnist, stl10
from fastclr.shards._errors import ShardError
from fastclr.shards._sources import (
    IMAGE_SUFFIXES,
    SOURCES,
    Sample,
    Source,
    array_source,
    check_class_names,
    check_split,
    file_source,
    register,
)

__all__ = ["SOURCES"]


# ---------------------------------------------------------------- ImageFolder


def _images_under(folder: Path) -> tuple[list[Path], int]:
    """Image files below `folder` (sorted) and the count of other files ignored."""
    images, others = [], 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(path)
            else:
                others += 1
    return images, others


@register("imagefolder")
def imagefolder(src: Path, split: str) -> Source:
    """Class subfolders (`root/<class>/**/*.jpg`), or Tiny-ImageNet's val layout."""
    if not src.is_dir():
        raise ShardError(f"--src {src}: not a folder; imagefolder wants root/<class>/<image> files")
    if (src / "val_annotations.txt").is_file() and (src / "images").is_dir():
        return _tiny_imagenet_val(src, split)
    class_dirs = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ShardError(f"--src {src}: no class subfolders; imagefolder wants root/<class>/<image>")
    check_class_names([p.name for p in class_dirs], f"--src {src}")  # before reading any image
    paths, labels, ignored = [], [], 0
    for label, folder in enumerate(class_dirs):
        images, others = _images_under(folder)
        ignored += others
        if not images:
            raise ShardError(f"{folder}: class folder holds no images; add images or remove it")
        paths += images
        labels += [label] * len(images)
    source = file_source("imagefolder", split, paths, labels, [p.name for p in class_dirs], src)
    source.provenance["ignored_non_image_files"] = ignored
    return source


def _tiny_imagenet_val(src: Path, split: str) -> Source:
    wnids_file = src.parent / "wnids.txt"
    rows = [line.split("\t") for line in (src / "val_annotations.txt").read_text().splitlines() if line]
    if any(len(row) < 2 for row in rows):
        raise ShardError(
            f"{src / 'val_annotations.txt'}: expected tab-separated "
            "'file<TAB>wnid' lines (Tiny-ImageNet's layout)"
        )
    # Class order follows the train folders (sorted wnids), so labels match a train conversion.
    classes = sorted(wnids_file.read_text().split()) if wnids_file.is_file() else sorted({r[1] for r in rows})
    label_of = {wnid: i for i, wnid in enumerate(classes)}
    paths, labels = [], []
    for row in sorted(rows):
        path = src / "images" / row[0]
        if not path.is_file():
            raise ShardError(f"{src / 'val_annotations.txt'} names {row[0]}, missing from {path.parent}")
        if row[1] not in label_of:
            raise ShardError(f"{src / 'val_annotations.txt'}: class {row[1]} not in {wnids_file}")
        paths.append(path)
        labels.append(label_of[row[1]])
    source = file_source("imagefolder", split, paths, labels, classes, src)
    source.provenance["layout"] = "tiny-imagenet-val"
    return source


# ---------------------------------------------------------------- npz, digits, synthetic

NPZ_IMAGE_KEYS = ("images", "x", "X", "data", "x_train")
NPZ_LABEL_KEYS = ("labels", "y", "Y", "targets", "y_train")


@register("npz")
def npz(src: Path, split: str) -> Source:
    """`.npz` with images (N,H,W[,C] or N,C,H,W; uint8, or float in [0, 1]) and integer labels."""
    try:
        arrays = np.load(src, allow_pickle=False)
        keys = list(arrays.keys())
    except (OSError, ValueError) as err:
        raise ShardError(f"--src {src}: not a readable .npz file ({err})") from None
    image_key = next((k for k in NPZ_IMAGE_KEYS if k in keys), None)
    label_key = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
    if image_key is None:
        raise ShardError(
            f"{src}: no image array; name it one of {', '.join(NPZ_IMAGE_KEYS)} "
            f"(found {', '.join(keys) or 'nothing'})"
        )
    images = arrays[image_key]
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[3] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    if images.dtype.kind == "f":
        finite = np.isfinite(images)
        if not finite.all():  # NaN would be stored as 0, a black pixel
            first = int(np.argmin(finite.reshape(len(images), -1).all(1)))
            raise ShardError(
                f"{src}: {image_key} holds {int((~finite).sum()):,} NaN or infinite pixels (the first "
                f"in image {first}); fix or drop those images"
            )
        if images.size and (images.min() < 0 or images.max() > 1):
            raise ShardError(f"{src}: float images must lie in [0, 1]; store uint8 instead")
        images = np.round(images * 255).astype(np.uint8)
    elif images.dtype != np.uint8:
        raise ShardError(f"{src}: images are {images.dtype}; store them as uint8 or float in [0, 1]")
    labels = None
    if label_key is not None:
        labels = arrays[label_key]
        if labels.dtype.kind not in "iu" or labels.shape != (len(images),):
            raise ShardError(
                f"{src}: {label_key} must be {len(images)} integers, got {labels.dtype} {labels.shape}"
            )
        if labels.size and labels.min() < 0:
            raise ShardError(f"{src}: label {int(labels.min())} is negative; labels are 0..K-1")
    elif split != "unlabeled":
        raise ShardError(
            f"{src}: no label array (one of {', '.join(NPZ_LABEL_KEYS)}); "
            "add one or convert with --split unlabeled"
        )
    if "class_names" in keys:
        names = arrays["class_names"]
        if names.ndim != 1:
            raise ShardError(f"{src}: class_names must be a list of names, got shape {names.shape}")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    else:
        count = int(labels.max()) + 1 if labels is not None and labels.size else 0
        if count > len(images):  # most classes would hold no image: a label that is no class number
            raise ShardError(
                f"{src}: label {count - 1} would make {count:,} classes (0..{count - 1}) for "
                f"{len(images):,} images; number the classes 0..K-1, or name them in a class_names array"
            )
        classes = [str(i) for i in range(count)]
    if labels is not None and labels.size and labels.max() >= len(classes):
        raise ShardError(f"{src}: label {int(labels.max())} but only {len(classes)} class_names")
    return array_source(
        "npz",
        split,
        images,
        labels,
        classes,
        str(src),
        provenance={"path": str(src), "keys": [image_key, label_key]},
    )


@register("digits")
def digits(src: Path | None, split: str, seed: int = 0) -> Source:
    """scikit-learn's 1,797 handwritten 8x8 digits, split 80/20 stratified (fixed seed)."""
    check_split("digits", split, ("train", "test", "unlabeled"))
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = np.round(data.images * (255 / 16)).astype(np.uint8)  # values 0..16 -> 0..255
    index = np.arange(len(images))
    train_idx, test_idx = train_test_split(index, test_size=0.2, stratify=data.target, random_state=0)
    chosen = np.sort(test_idx if split == "test" else train_idx)
    return array_source(
        "digits",
        split,
        images[chosen],
        data.target[chosen],
        [str(i) for i in range(10)],
        "sklearn.datasets.load_digits",
        provenance={
            "split_rule": "train_test_split(test_size=0.2, stratify, random_state=0)",
            "indices_from": "load_digits() order",
        },
    )


@register("synthetic")
def synthetic(
    src: Path | None, split: str, num: int = 1000, size: int = 32, classes: int = 10, seed: int = 0
) -> Source:
    """`num` seeded RGB images of `size` px in `classes` classes: per-class colour and stripes + noise."""
    if num < 1 or size < 4 or classes < 1:
        raise ShardError("synthetic needs --num >= 1, --size >= 4 and --classes >= 1")
    rng = np.random.default_rng(seed)
    base_colour = rng.uniform(40, 215, size=(classes, 3))
    angle = rng.uniform(0, np.pi, size=classes)
    freq = rng.uniform(0.15, 0.6, size=classes)
    labels = np.arange(num) % classes
    rng.shuffle(labels)
    noise_seed = int(rng.integers(2**31))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def get(i: int) -> Sample:
        c = int(labels[i])
        local = np.random.default_rng([noise_seed, i])
        phase = local.uniform(0, 2 * np.pi)
        stripes = np.sin(freq[c] * (xx * np.cos(angle[c]) + yy * np.sin(angle[c])) + phase)
        image = base_colour[c] + 35 * stripes[..., None] + local.normal(0, 12, size=(size, size, 3))
        return Sample(
            np.clip(image, 0, 255).astype(np.uint8), c if split != "unlabeled" else -1, f"synthetic[{i}]"
        )

    return Source(
        "synthetic",
        split,
        [f"class_{c}" for c in range(classes)],
        3,
        split != "unlabeled",
        get,
        num,
        provenance={"num": num, "size": size, "classes": classes, "seed": seed},
    )
