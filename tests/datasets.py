"""Tiny datasets written in each source's real on-disk format, for tests."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def images(n: int, h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    shape = (n, h, w, c) if c > 1 else (n, h, w)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 6) -> tuple[Path, dict]:
    """cifar-10-batches-py as distributed (pickles with bytes keys, CHW rows); returns arrays."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    truth = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        pixels = images(per_batch, 32, 32, seed=i)
        labels = [(i + k) % 10 for k in range(per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": pixels.transpose(0, 3, 1, 2).reshape(per_batch, -1),
            b"filenames": [f"{name}_{k}.png".encode() for k in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        truth[name] = (pixels, labels)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}))
    return folder, truth


def write_cifar100(root: Path, n: int = 8) -> tuple[Path, dict]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    truth = {}
    for i, split in enumerate(["train", "test"]):
        pixels = images(n, 32, 32, seed=10 + i)
        fine = [(3 * k + i) % 100 for k in range(n)]
        coarse = [f % 20 for f in fine]
        batch = {
            b"data": pixels.transpose(0, 3, 1, 2).reshape(n, -1),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
        }
        (folder / split).write_bytes(pickle.dumps(batch))
        truth[split] = (pixels, fine, coarse)
    meta = {
        b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
        b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return folder, truth


def tar_gz(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


def _idx(array: np.ndarray) -> bytes:
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    for split, prefix, n in [("train", "train", n_train), ("test", "t10k", n_test)]:
        pixels = images(n, 28, 28, c=1, seed=n)
        labels = np.arange(n) % 10
        for stem, array in [(f"{prefix}-images-idx3-ubyte", pixels), (f"{prefix}-labels-idx1-ubyte", labels)]:
            data = _idx(array)
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (root / stem).write_bytes(data)
        truth[split] = (pixels, labels)
    return truth


def write_stl10(root: Path, n: int = 4) -> dict:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    truth = {}
    for i, split in enumerate(["train", "test", "unlabeled"]):
        pixels = images(n, 96, 96, seed=20 + i)
        # STL-10 stores each image as 3 column-major 96x96 planes.
        pixels.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        labels = np.arange(n) % 10
        if split != "unlabeled":
            (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        truth[split] = (pixels, labels)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return truth


def encode(pixels: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=quality) if fmt == "JPEG" else Image.fromarray(
        pixels
    ).save(buffer, format=fmt)
    return buffer.getvalue()


def write_imagefolder(
    root: Path, classes=("cat", "dog", "eel"), per_class: int = 4, size: int = 24, fmt: str = "JPEG"
) -> dict[str, list[bytes]]:
    """root/<class>/<i>.jpg; returns each class's file bytes in sorted file order."""
    files = {}
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        files[name] = []
        for i in range(per_class):
            data = encode(images(1, size, size, seed=100 * c + i)[0], fmt)
            (root / name / f"img_{i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}").write_bytes(data)
            files[name].append(data)
    return files


def write_tiny_imagenet_val(root: Path, wnids=("n02", "n01", "n03"), per_class: int = 2) -> Path:
    """tiny-imagenet-200/{wnids.txt, val/images/*.JPEG, val/val_annotations.txt}."""
    val = root / "tiny-imagenet-200" / "val"
    (val / "images").mkdir(parents=True)
    (root / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rows = []
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            name = f"val_{c * per_class + i}.JPEG"
            (val / "images" / name).write_bytes(encode(images(1, 64, 64, seed=c * 7 + i)[0], "JPEG"))
            rows.append(f"{name}\t{wnid}\t0\t0\t10\t10")
    (val / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return val


def convert_folder_argv(src, out, *extra) -> list:
    """The argv of `fastclr shards convert imagefolder` turning SRC's images (a train split) into OUT."""
    return ["shards", "convert", "imagefolder", "--split", "train", "--src", src, "--out", out, *extra]


def write_synthetic_shards(root: Path, **nums: int) -> Path:
    """root/<split> for each split=num: synthetic 16-pixel JPEG shards of 4 classes, 32 images a shard,
    seeded by the split's name (so train and test differ). The small data the training tests share."""
    from fastclr import shards

    for split, num in nums.items():
        source = shards.open_source("synthetic", None, split, num=num, size=16, classes=4, seed=len(split))
        shards.convert(source, root / split, shard_size=32, encoding="jpeg", progress=False)
    return root
