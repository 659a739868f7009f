"""Augmentation presets: every parameter of every op is a named field.

`create_augment("simclr", size=32, jitter_p=0.5)` returns the preset scaled to
the image size, with any field overridden; an unknown preset or field raises,
listing the valid ones. The same `Augment` drives the DALI graph and the
torchvision baseline, so both apply one recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass


class PipelineError(Exception):
    """A problem with the user's data or pipeline settings, phrased as what to fix."""


@dataclass(frozen=True)
class Augment:
    """One view's random ops, applied in this order."""

    crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction of random resized crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop
    rotate_deg: float = 0.0  # uniform rotation in [-deg, deg], keeping the size
    flip_p: float = 0.5  # horizontal flip
    jitter_p: float = 0.8  # colour jitter applied with this probability
    brightness: float = 0.4  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # fraction of the hue circle, drawn from [-h, h]
    gray_p: float = 0.2  # grayscale
    blur_p: float = 0.0  # Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: float = 0.1  # kernel side as a fraction of the image side (SimCLR: 10%)
    solarize_p: float = 0.0
    solarize_threshold: int = 128

    @property
    def uses_colour(self) -> bool:
        return self.jitter_p > 0 or self.gray_p > 0 or self.solarize_p > 0


# Image side from which SimCLR's ImageNet recipe applies (blur, jitter strength 1);
# below it, its CIFAR recipe (no blur, jitter strength 0.5).
LARGE_IMAGE = 96


def _jitter(strength: float) -> dict:
    """SimCLR's colour jitter of strength s: (0.8s, 0.8s, 0.8s, 0.2s)."""
    return {
        "brightness": 0.8 * strength,
        "contrast": 0.8 * strength,
        "saturation": 0.8 * strength,
        "hue": 0.2 * strength,
    }


def _simclr(size: int) -> Augment:
    if size >= LARGE_IMAGE:
        return Augment(**_jitter(1.0), blur_p=0.5)
    return Augment(**_jitter(0.5))


def _basic(size: int) -> Augment:
    return dataclasses.replace(_simclr(size), jitter_p=0.0, gray_p=0.0, blur_p=0.0)


def _color(size: int) -> Augment:
    return dataclasses.replace(_simclr(size), gray_p=0.0, blur_p=0.0)


def _gray(size: int) -> Augment:
    return dataclasses.replace(_basic(size), gray_p=0.2)


def _strong(size: int) -> Augment:
    return Augment(**_jitter(1.0), jitter_p=0.8, gray_p=0.2, blur_p=0.5, solarize_p=0.2)


def _digits(size: int) -> Augment:
    # Blur mattered most on scikit-learn's digits: linear probe 96.5% -> 98.0% (BENCHMARKS.md).
    return Augment(
        crop_scale=(0.6, 1.0),
        crop_ratio=(0.9, 1.1),
        rotate_deg=10.0,
        flip_p=0.0,
        jitter_p=0.0,
        gray_p=0.0,
        blur_p=0.5,
        blur_sigma=(0.1, 1.0),
        blur_kernel=0.2,
    )


PRESETS: dict[str, Callable[[int], Augment]] = {
    "simclr": _simclr,
    "basic": _basic,
    "color": _color,
    "gray": _gray,
    "strong": _strong,
    "digits": _digits,
}


def create_augment(preset: str, size: int, **overrides) -> Augment:
    """The preset `preset` for images of side `size`, with fields overridden."""
    if preset not in PRESETS:
        raise PipelineError(f"unknown augmentation preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Augment)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise PipelineError(
            f"unknown augmentation parameter {unknown[0]!r}; valid ones: {', '.join(sorted(fields))}"
        )
    augment = dataclasses.replace(PRESETS[preset](size), **overrides)
    for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
        if not 0 <= getattr(augment, name) <= 1:
            raise PipelineError(
                f"augmentation {name}={getattr(augment, name)} is not a probability in [0, 1]"
            )
    low, high = augment.crop_scale
    if not 0 < low <= high <= 1:
        raise PipelineError(f"augmentation crop_scale={augment.crop_scale} must satisfy 0 < min <= max <= 1")
    return augment
