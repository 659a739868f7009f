"""Augmentations: ordered tuples of ops, presets that make them for an image size, and overrides by name.

    create_augment("simclr", size=32, jitter_p=0.5)
    # (RandomResizedCrop(...), ColorJitter(jitter_p=0.5, ...), Grayscale(gray_p=0.2), HorizontalFlip(...))

Both loaders apply an augmentation's ops in its order. A preset is a function of the image side
registered in `PRESETS`; an override names a parameter (a field of one op, `augment_parameters()`).
It changes that op, or adds the op the preset lacks at its place in `OPS`' order (a flip stays
last), switched off (probability 0) unless the override sets its probability. An unknown preset
or parameter lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable

from fastclr.pipelines._errors import PipelineError
from fastclr.pipelines._ops import (
    OPS,
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    Op,
    RandomResizedCrop,
    Rotate,
    Solarize,
)

Augmentation = tuple[Op, ...]
PRESETS: dict[str, Callable[[int], Augmentation]] = {}


def register_preset(name: str):
    """Decorator: `fn(size) -> Augmentation` becomes the preset `name`."""

    def add(fn: Callable[[int], Augmentation]) -> Callable[[int], Augmentation]:
        PRESETS[name] = fn
        return fn

    return add


# Image side from which SimCLR's ImageNet recipe applies (blur, jitter strength 1);
# below it, its CIFAR recipe (no blur, jitter strength 0.5).
LARGE_IMAGE = 96


def jitter(strength: float, jitter_p: float = 0.8) -> ColorJitter:
    """SimCLR's colour jitter of strength s: (0.8s, 0.8s, 0.8s, 0.2s)."""
    s = strength
    return ColorJitter(jitter_p, brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s)


@register_preset("simclr")
def _simclr(size: int) -> Augmentation:
    if size >= LARGE_IMAGE:
        return RandomResizedCrop(), jitter(1.0), Grayscale(0.2), GaussianBlur(0.5), HorizontalFlip(0.5)
    return RandomResizedCrop(), jitter(0.5), Grayscale(0.2), HorizontalFlip(0.5)


@register_preset("basic")
def _basic(size: int) -> Augmentation:
    return RandomResizedCrop(), HorizontalFlip(0.5)


@register_preset("color")
def _color(size: int) -> Augmentation:
    return tuple(op for op in _simclr(size) if not isinstance(op, (Grayscale, GaussianBlur)))


@register_preset("gray")
def _gray(size: int) -> Augmentation:
    return RandomResizedCrop(), Grayscale(0.2), HorizontalFlip(0.5)


@register_preset("strong")
def _strong(size: int) -> Augmentation:
    return (
        RandomResizedCrop(),
        jitter(1.0),
        Grayscale(0.2),
        GaussianBlur(0.5),
        Solarize(0.2),
        HorizontalFlip(0.5),
    )


@register_preset("digits")
def _digits(size: int) -> Augmentation:
    # Blur mattered most on scikit-learn's digits: linear probe 96.5% -> 98.0% (BENCHMARKS.md).
    return (
        RandomResizedCrop(crop_scale=(0.6, 1.0), crop_ratio=(0.9, 1.1)),
        Rotate(10.0),
        GaussianBlur(0.5, blur_sigma=(0.1, 1.0), blur_kernel=0.2),
        HorizontalFlip(0.0),  # digits have a handedness; kept at 0 so `flip_p` can turn it on
    )


def _owners() -> dict[str, type[Op]]:
    return {f.name: op for op in OPS.values() for f in dataclasses.fields(op)}


def augment_parameters() -> dict[str, type]:
    """Every override name (a field of a registered op) and its type, e.g. {"jitter_p": float, ...}."""
    hints = {}
    for op in OPS.values():
        types = typing.get_type_hints(op)
        hints.update({f.name: types[f.name] for f in dataclasses.fields(op)})
    return hints


def _rank(op: Op) -> int:
    """An op's place in OPS' order; the flip after every op, registered later or not: last in a
    view, DALI fuses it into the final normalise."""
    order = [cls for cls in OPS.values() if cls is not HorizontalFlip]
    return order.index(type(op)) if type(op) in order else len(order) + isinstance(op, HorizontalFlip)


def configure(augment: Augmentation, **overrides) -> Augmentation:
    """`augment` with parameters overridden by name (see the module docstring)."""
    owners = _owners()
    unknown = sorted(set(overrides) - set(owners))
    if unknown:
        raise PipelineError(
            f"unknown augmentation parameter {unknown[0]!r}; valid ones: {', '.join(sorted(owners))}"
        )
    ops = list(augment)
    for cls in dict.fromkeys(owners[name] for name in overrides):  # in the overrides' order
        mine = {name: value for name, value in overrides.items() if owners[name] is cls}
        at = next((i for i, op in enumerate(ops) if type(op) is cls), None)
        if at is not None:
            ops[at] = dataclasses.replace(ops[at], **mine)
            continue
        added = cls(**{**({cls.probability: 0.0} if cls.probability else {}), **mine})
        if added.active:  # an op switched off is left out, as the preset had it
            ops.insert(next((i for i, op in enumerate(ops) if _rank(op) > _rank(added)), len(ops)), added)
    return check_augment(tuple(ops))


def check_augment(augment) -> Augmentation:
    """`augment` as a tuple, refused unless it is ops that start with the crop (which sets the side)."""
    augment = tuple(augment)
    if not augment or not isinstance(augment[0], RandomResizedCrop):
        raise PipelineError(
            "an augmentation starts with RandomResizedCrop (it makes the view's side); "
            f"got {', '.join(type(op).__name__ for op in augment) or 'no ops'}"
        )
    kinds = [type(op) for op in augment]
    for op in augment:
        if not isinstance(op, Op):
            raise PipelineError(f"augmentation op {op!r} is not a pipelines Op")
        if kinds.count(type(op)) > 1:  # a parameter name would stand for two ops
            raise PipelineError(f"augmentation has {type(op).__name__} twice; give each op once")
    return augment


def create_augment(preset: str, size: int, **overrides) -> Augmentation:
    """The preset `preset` for images of side `size`, with parameters overridden by name."""
    if preset not in PRESETS:
        raise PipelineError(f"unknown augmentation preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return configure(PRESETS[preset](size), **overrides)


def colour_ops(augment: Augmentation) -> list[str]:
    """The names of the ops that need three channels as set."""
    return [type(op).__name__ for op in augment if op.needs_colour]
