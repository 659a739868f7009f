"""Readers of the datasets shipped in their own binary formats: CIFAR-10/100 (python pickles),
MNIST (IDX files) and STL-10 (raw planes), from the archive or the folder as distributed.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from fastclr.shards._errors import ShardError
from fastclr.shards._sources import Source, array_source, check_split, imagefolder_hint, register

# ---------------------------------------------------------------- CIFAR


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR ships as pickles: allow only what its batches hold (dicts, lists, numpy arrays)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 2 spells bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_members(src: Path, wanted: list[str], dataset: str, hint: str) -> dict[str, bytes]:
    """Files `wanted` by base name from a folder (or one level below) or a .tar.gz as distributed."""
    found: dict[str, bytes] = {}
    if src.is_file():
        try:
            with tarfile.open(src, "r:*") as tar:
                for info in tar:
                    base = info.name.rsplit("/", 1)[-1]
                    if info.isfile() and base in wanted:
                        found[base] = tar.extractfile(info).read()
        except (tarfile.TarError, OSError) as err:
            raise ShardError(f"--src {src}: not a readable {dataset} archive ({err}); {hint}") from None
    else:
        for folder in [src, *sorted(p for p in src.iterdir() if p.is_dir())]:
            if all((folder / name).is_file() for name in wanted):
                found = {name: (folder / name).read_bytes() for name in wanted}
                break
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ShardError(
            f"--src {src}: no {dataset} files {', '.join(missing)} there; {hint}{imagefolder_hint(src)}"
        )
    return found


def _unpickle(data: bytes, origin: str) -> dict:
    try:
        return _ArraysOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any failure means "not a CIFAR batch"
        raise ShardError(f"{origin}: not a CIFAR python batch ({err})") from None


def _cifar(
    src: Path, split: str, dataset: str, files: list[str], meta: str, label_keys: list[str], hint: str
) -> tuple[np.ndarray, list[np.ndarray], dict, str]:
    raw = _read_members(src, files + [meta], dataset, hint)
    images, labels = [], [[] for _ in label_keys]
    for name in files:
        batch = _unpickle(raw[name], f"{src}:{name}")
        try:
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            for store, key in zip(labels, label_keys, strict=True):
                store.extend(batch[key])
        except (KeyError, ValueError) as err:
            raise ShardError(f"{src}:{name}: not a {dataset} python batch ({err}); {hint}") from None
    meta_dict = _unpickle(raw[meta], f"{src}:{meta}")
    stacked = np.concatenate(images).transpose(0, 2, 3, 1)
    return stacked, [np.asarray(x, dtype=np.int64) for x in labels], meta_dict, ",".join(files)


@register("cifar10")
def cifar10(src: Path, split: str) -> Source:
    check_split("cifar10", split, ("train", "test"))
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    hint = "point --src at cifar-10-python.tar.gz or its cifar-10-batches-py folder"
    images, (labels,), meta, origin = _cifar(src, split, "CIFAR-10", files, "batches.meta", [b"labels"], hint)
    classes = [c.decode() for c in meta[b"label_names"]]
    return array_source(
        "cifar10",
        split,
        images,
        labels,
        classes,
        f"{src}:{origin}",
        provenance={"path": str(src), "files": files},
    )


@register("cifar100")
def cifar100(src: Path, split: str) -> Source:
    check_split("cifar100", split, ("train", "test"))
    hint = "point --src at cifar-100-python.tar.gz or its cifar-100-python folder"
    images, (fine, coarse), meta, origin = _cifar(
        src, split, "CIFAR-100", [split], "meta", [b"fine_labels", b"coarse_labels"], hint
    )
    fine_names = [c.decode() for c in meta[b"fine_label_names"]]
    coarse_names = [c.decode() for c in meta[b"coarse_label_names"]]
    return array_source(
        "cifar100",
        split,
        images,
        fine,
        fine_names,
        f"{src}:{origin}",
        extra={"coarse": (coarse, coarse_names)},
        provenance={"path": str(src), "files": [split]},
    )


# ---------------------------------------------------------------- MNIST


def _idx_file(src: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (src / name).is_file():
            return src / name
    raise ShardError(
        f"--src {src}: no {stem}[.gz] there; point --src at the folder of MNIST's four IDX files"
        + imagefolder_hint(src)
    )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ShardError(f"{path}: damaged gzip ({err}); download the file again") from None
    if len(data) < 8 or int.from_bytes(data[:4], "big") != magic:
        raise ShardError(
            f"{path}: not an IDX file (magic {data[:4].hex()}, expected "
            f"{magic:08x}); point --src at MNIST's original IDX files"
        )
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ShardError(
            f"{path}: holds {body.size} bytes of data, its header promises "
            f"{int(np.prod(shape))}; the file is truncated"
        )
    return body.reshape(shape)


@register("mnist")
def mnist(src: Path, split: str) -> Source:
    check_split("mnist", split, ("train", "test"))
    if src.is_file():
        raise ShardError(f"--src {src}: a file; point --src at the folder of MNIST's four IDX files")
    prefix = "train" if split == "train" else "t10k"
    image_path = _idx_file(src, f"{prefix}-images-idx3-ubyte")
    label_path = _idx_file(src, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(image_path, 0x00000803)
    labels = _read_idx(label_path, 0x00000801).astype(np.int64)
    if len(images) != len(labels):
        raise ShardError(f"{image_path}: {len(images)} images but {label_path.name} has {len(labels)} labels")
    return array_source(
        "mnist",
        split,
        images,
        labels,
        [str(i) for i in range(10)],
        str(image_path),
        provenance={"path": str(src), "files": [image_path.name, label_path.name]},
    )


# ---------------------------------------------------------------- STL-10


@register("stl10")
def stl10(src: Path, split: str) -> Source:
    check_split("stl10", split, ("train", "test", "unlabeled"))
    folder = src / "stl10_binary" if (src / "stl10_binary").is_dir() else src
    image_path = folder / f"{split}_X.bin"
    if not image_path.is_file():
        raise ShardError(
            f"--src {src}: no {image_path.name} there; point --src at the "
            "stl10_binary folder of stl10_binary.tar.gz" + imagefolder_hint(src)
        )
    pixels = 3 * 96 * 96
    if image_path.stat().st_size % pixels:
        raise ShardError(
            f"{image_path}: size is not a multiple of one 96x96x3 image; the file is truncated or not STL-10"
        )
    # Column-major 3x96x96 per image: transpose to HWC without loading it all (unlabeled is 2.7 GB).
    images = np.memmap(image_path, dtype=np.uint8, mode="r").reshape(-1, 3, 96, 96)
    images = images.transpose(0, 3, 2, 1)
    labels = None
    if split != "unlabeled":
        label_path = folder / f"{split}_y.bin"
        if not label_path.is_file():
            raise ShardError(f"--src {src}: no {label_path.name} beside {image_path.name}")
        labels = np.fromfile(label_path, dtype=np.uint8).astype(np.int64) - 1  # stored 1..10
        if len(labels) != len(images):
            raise ShardError(f"{label_path}: {len(labels)} labels for {len(images)} images")
    names_path = folder / "class_names.txt"
    classes = (
        names_path.read_text().split()
        if names_path.is_file()
        else ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    )
    return array_source(
        "stl10",
        split,
        images,
        labels,
        classes,
        str(image_path),
        provenance={"path": str(src), "files": [image_path.name]},
    )
