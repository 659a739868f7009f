"""A CIFAR-10-shaped ImageFolder archive at a tiny size, for `bash bench/gpu.sh dry-run`.

    python -m fastclr.bench.tiny_cifar OUT.tar.gz --train-per-class 8 --test-per-class 4

The layout of the real `cifar10-jpeg.tar.gz` the GPU stages read: `cifar10/{train,test}/<class>/
<n>.jpg`, ten classes, 32 px RGB JPEGs; each class its own colour under noise, so that the dry run's
kNN and linear probe have something to find. Made here, in a second: the dry run needs nothing
prepared beyond the installed project.
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def write(out: Path, train_per_class: int, test_per_class: int, size: int = 32, seed: int = 0) -> Path:
    """The archive at `out`: every split's images, a class's colour plus noise."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(len(CLASSES), 3))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            for label, name in enumerate(CLASSES):
                for n in range(count):
                    noise = rng.normal(0, 40, size=(size, size, 3))
                    data = jpeg(np.clip(colours[label] + noise, 0, 255).astype(np.uint8))
                    member = tarfile.TarInfo(f"cifar10/{split}/{name}/{n:04d}.jpg")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train-per-class", type=int, default=8)
    parser.add_argument("--test-per-class", type=int, default=4)
    args = parser.parse_args()
    write(args.out, args.train_per_class, args.test_per_class)
    print(args.out)


if __name__ == "__main__":
    main()
