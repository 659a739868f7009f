"""Augmentation ops: each a frozen dataclass holding its parameters, its DALI form and its torchvision form.

An op's fields are the names a config overrides (`data.augment: {jitter_p: 0.5}`), so every field
name belongs to one registered op. `probability` names the field giving the chance an op is applied
to a sample; the loaders apply that chance (a per-sample DALI conditional, torchvision's
`RandomApply`), so `dali()` and `torchvision()` say only what the op does to an image it is applied
to. Creating an op checks its parameters. A new op:

    @register_op
    @dataclass(frozen=True)
    class Invert(Op):
        probability: ClassVar[str] = "invert_p"
        invert_p: float = 0.5

        def dali(self, image, size):
            return fn.cast(255 - fn.cast(image, dtype=types.INT16), dtype=types.UINT8)

        def torchvision(self, size):
            return v2.RandomInvert(1.0)

`register_op` is only needed for its parameters to be overridable by name; any Op works in a list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from nvidia.dali import fn, types
from torchvision.transforms import v2

from fastclr.pipelines._errors import PipelineError


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_probability(name: str, value) -> None:
    """Refuse `value` unless it is a probability, naming the parameter."""
    if not _is_number(value) or not 0 <= value <= 1:
        raise PipelineError(f"augmentation {name}={value!r} is not a probability in [0, 1]")


def check_between(name: str, value, low: float, high: float) -> None:
    """Refuse `value` unless it is a number in [low, high]."""
    if not _is_number(value) or not low <= value <= high:
        raise PipelineError(f"augmentation {name}={value!r} must be a number in [{low:g}, {high:g}]")


def check_range(name: str, value, low: float, high: float | None = None) -> None:
    """Refuse `value` unless it is (min, max) with low < min <= max (<= high)."""
    pair = isinstance(value, tuple) and len(value) == 2 and all(map(_is_number, value))
    if not pair or not low < value[0] <= value[1] <= (value[1] if high is None else high):
        bound = "" if high is None else f" <= {high:g}"
        raise PipelineError(f"augmentation {name}={value!r} must satisfy {low:g} < min <= max{bound}")


def uniform(low: float, high: float):
    """Per-sample draw from [low, high]; a constant when the range is one value (no random op)."""
    return low if low == high else fn.random.uniform(range=(low, high))


@dataclass(frozen=True)
class Op:
    """Base of the augmentation ops; see the module docstring."""

    probability: ClassVar[str | None] = None  # the field with the chance of applying it; None: always
    colour: ClassVar[bool] = False  # acts on colour: refused on one-channel images

    def __post_init__(self):
        for field in dataclasses.fields(self):  # YAML gives ranges as lists: kept as (hashable) tuples
            value = getattr(self, field.name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, field.name, tuple(value))
        if self.probability is not None:
            check_probability(self.probability, self.chance)
        self.check()

    def check(self) -> None:
        """Raise PipelineError naming a parameter out of its range (the probability is checked already)."""

    @property
    def chance(self) -> float | None:
        """The probability of applying the op to a sample, or None for every sample."""
        return None if self.probability is None else getattr(self, self.probability)

    @property
    def active(self) -> bool:
        """Whether the op can change an image as set (an op with chance 0 adds nothing to a graph)."""
        return self.chance is None or self.chance > 0

    @property
    def needs_colour(self) -> bool:
        """Whether the op, as set, needs three channels."""
        return self.colour and self.active

    def dali(self, image, size: int):
        """The op on a DALI graph's HWC uint8 `image`, for a view of side `size`."""
        raise NotImplementedError

    def torchvision(self, size: int) -> v2.Transform:
        """The same op as a torchvision v2 transform of CHW uint8 tensors."""
        raise NotImplementedError


OPS: dict[str, type[Op]] = {}  # name -> class, in the order an op added by an override takes


def register_op(cls: type[Op]) -> type[Op]:
    """Class decorator: `cls`'s fields become override names; each name must be new."""
    owners = {f.name: op for op in OPS.values() for f in dataclasses.fields(op)}
    for field in dataclasses.fields(cls):
        if owners.get(field.name, cls) is not cls:
            raise ValueError(f"{cls.__name__}.{field.name}: {owners[field.name].__name__} has that name")
    OPS[cls.__name__] = cls
    return cls


@register_op
@dataclass(frozen=True)
class RandomResizedCrop(Op):
    """A crop of a random area fraction and aspect ratio, resized to the view's side."""

    crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio

    def check(self) -> None:
        check_range("crop_scale", self.crop_scale, 0, 1)
        check_range("crop_ratio", self.crop_ratio, 0)

    def dali(self, image, size: int):
        return fn.random_resized_crop(
            image,
            size=(size, size),
            random_area=list(self.crop_scale),
            random_aspect_ratio=list(self.crop_ratio),
        )

    def torchvision(self, size: int) -> v2.Transform:
        return v2.RandomResizedCrop(size, scale=self.crop_scale, ratio=self.crop_ratio, antialias=True)


@register_op
@dataclass(frozen=True)
class Rotate(Op):
    """A uniform rotation in [-rotate_deg, rotate_deg] degrees, keeping the size (corners black)."""

    rotate_deg: float = 0.0

    def check(self) -> None:
        check_between("rotate_deg", self.rotate_deg, 0, 180)

    @property
    def active(self) -> bool:
        return self.rotate_deg > 0

    def dali(self, image, size: int):
        angle = uniform(-self.rotate_deg, self.rotate_deg)
        return fn.rotate(image, angle=angle, keep_size=True, fill_value=0)

    def torchvision(self, size: int) -> v2.Transform:
        return v2.RandomRotation(self.rotate_deg)


@register_op
@dataclass(frozen=True)
class ColorJitter(Op):
    """Brightness, contrast and saturation factors from [1 - x, 1 + x], hue from [-hue, hue] of the circle.

    DALI's colour twist applies them in a fixed order; torchvision draws a random order.
    """

    probability: ClassVar[str] = "jitter_p"
    colour: ClassVar[bool] = True
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # fraction of the hue circle

    def check(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            check_between(name, getattr(self, name), 0, 1)
        check_between("hue", self.hue, 0, 0.5)

    def dali(self, image, size: int):
        return fn.color_twist(
            image,
            brightness=uniform(1 - self.brightness, 1 + self.brightness),
            contrast=uniform(1 - self.contrast, 1 + self.contrast),
            saturation=uniform(1 - self.saturation, 1 + self.saturation),
            hue=uniform(-self.hue * 180, self.hue * 180),  # degrees
        )

    def torchvision(self, size: int) -> v2.Transform:
        return v2.ColorJitter(self.brightness, self.contrast, self.saturation, self.hue)


@register_op
@dataclass(frozen=True)
class Grayscale(Op):
    """The luma in every channel."""

    probability: ClassVar[str] = "gray_p"
    colour: ClassVar[bool] = True
    gray_p: float = 0.2

    def dali(self, image, size: int):
        return fn.color_twist(image, saturation=0.0)

    def torchvision(self, size: int) -> v2.Transform:
        return v2.Grayscale(num_output_channels=3)


@register_op
@dataclass(frozen=True)
class GaussianBlur(Op):
    """A Gaussian blur of a random sigma, its kernel a fraction of the view's side (SimCLR: 10%)."""

    probability: ClassVar[str] = "blur_p"
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: float = 0.1  # kernel side / view side

    def check(self) -> None:
        check_range("blur_sigma", self.blur_sigma, 0)
        check_between("blur_kernel", self.blur_kernel, 0, 1)

    def kernel_side(self, size: int) -> int:
        """The odd kernel side for a view of side `size`, at least 3."""
        return max(3, int(self.blur_kernel * size) // 2 * 2 + 1)

    def dali(self, image, size: int):
        return fn.gaussian_blur(image, window_size=self.kernel_side(size), sigma=uniform(*self.blur_sigma))

    def torchvision(self, size: int) -> v2.Transform:
        return v2.GaussianBlur(self.kernel_side(size), self.blur_sigma)


@register_op
@dataclass(frozen=True)
class Solarize(Op):
    """Pixels at or above the threshold inverted (255 - x)."""

    probability: ClassVar[str] = "solarize_p"
    colour: ClassVar[bool] = True  # part of the colour recipe; one-channel sets are refused it, as ever
    solarize_p: float = 0.2
    solarize_threshold: int = 128

    def check(self) -> None:
        if not isinstance(self.solarize_threshold, int) or not 0 <= self.solarize_threshold <= 255:
            raise PipelineError(
                f"augmentation solarize_threshold={self.solarize_threshold!r} must be an integer in 0..255"
            )

    def dali(self, image, size: int):
        wide = fn.cast(image, dtype=types.INT16)
        return fn.cast(wide + (255 - 2 * wide) * (wide >= self.solarize_threshold), dtype=types.UINT8)

    def torchvision(self, size: int) -> v2.Transform:
        return v2.RandomSolarize(self.solarize_threshold, p=1.0)


@register_op
@dataclass(frozen=True)
class HorizontalFlip(Op):
    """A left-right mirror. Last in a list, DALI fuses it into the final normalise (no pass of its own)."""

    probability: ClassVar[str] = "flip_p"
    flip_p: float = 0.5

    def dali(self, image, size: int):
        return fn.flip(image, horizontal=1)

    def dali_mirror(self):
        """The per-sample coin that crop_mirror_normalize's `mirror` takes: the flip fused there.

        Drawn even at flip_p=0, so the random ops made after it keep their seeds."""
        return fn.random.coin_flip(probability=self.flip_p)

    def torchvision(self, size: int) -> v2.Transform:
        return v2.RandomHorizontalFlip(1.0)
