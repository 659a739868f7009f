"""Dataset readers: each turns files as distributed into a random-access `Source`.

A source yields samples by index (so conversion workers can each take whole
shards) and never writes anything. Register a reader with `@register("name")`.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
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


def _check_split(name: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ShardError(f"{name} has no {split!r} split; choose one of: {', '.join(allowed)}")


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

    def get(i: int) -> Sample:
        try:
            data = paths[i].read_bytes()
        except OSError as err:
            raise ShardError(f"{paths[i]}: cannot read ({err.strerror})") from None
        return Sample(image=data, label=labels[i] if labeled else -1, origin=str(paths[i]))

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
    _check_split("cifar10", split, ("train", "test"))
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
    _check_split("cifar100", split, ("train", "test"))
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
    _check_split("mnist", split, ("train", "test"))
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
    _check_split("stl10", split, ("train", "test", "unlabeled"))
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
        classes = [str(c) for c in arrays["class_names"]]
    else:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels is not None and labels.size else 0)]
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
    _check_split("digits", split, ("train", "test", "unlabeled"))
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
