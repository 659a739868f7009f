"""Image bytes to the 8-bit pixels fastclr stores, and back: what `shards convert` decodes (to check
every image whole and to measure the mean/std) and encodes.

The pixels measured are the pixels stored, so the statistics are those the training decoder sees.
An image of 16 bits a channel (a 16-bit PNG or TIFF) is narrowed to its high byte (as Pillow reads
16-bit colour) and stored re-encoded in 8 bits: left as it is, Pillow would clip a 16-bit grey to
white for the statistics while DALI scales it to 8 bits, and every such image would be normalised
wrong. Images of 32-bit integers or floats have no agreed 8-bit reading and are refused.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

PIL_ENCODING = {"JPEG": "jpeg", "PNG": "png"}
WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N")  # Pillow's modes of one 16-bit channel
UNREADABLE_DEPTH = ("I", "F")  # 32-bit integers (but a PNG's: older Pillows' 16-bit grey), floats


class CorruptImage(Exception):
    pass


class TooLarge(CorruptImage):
    """The header declares more pixels than allowed: refused before decoding (a decompression bomb?)."""


class Decoded(NamedTuple):
    pixels: np.ndarray  # HWC (3 channels) or HW (1), uint8
    encoding: str | None  # 'jpeg' / 'png' when the file's own bytes can be stored as they are
    narrowed: bool  # 16 bits a channel narrowed to 8: the file must be encoded anew


def decode_image(data: bytes, channels: int, max_pixels: int | None = None) -> Decoded:
    """Fully decode encoded bytes (catches truncation) to 8-bit pixels of `channels` channels.

    An image whose header declares more than `max_pixels` pixels raises TooLarge before decoding."""
    try:
        with warnings.catch_warnings():  # Pillow's own limit only warns below twice its MAX_IMAGE_PIXELS
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))  # reads the header only
        with opened as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise TooLarge(
                    f"its header declares {width} x {height} = {width * height:,} pixels, over "
                    f"--max-pixels {max_pixels:,} (a decompression bomb?)"
                )
            wide_grey = image.mode in WIDE_GREY or (image.mode == "I" and image.format == "PNG")
            if image.mode in UNREADABLE_DEPTH and not wide_grey:
                kind = "32-bit integer" if image.mode == "I" else "32-bit float"
                raise CorruptImage(f"{kind} pixels have no 8-bit reading; save it with 8 bits a channel")
            # Pillow reads 16-bit colour as its high bytes, telling it only in the tile's raw mode
            narrowed = wide_grey or any(";16" in str(tile.args) for tile in image.tile)
            image.load()
            encoding = None if narrowed else PIL_ENCODING.get(image.format)
            if wide_grey:
                grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                pixels = np.repeat(grey[..., None], 3, axis=2) if channels == 3 else grey
            else:
                pixels = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    except UnidentifiedImageError:
        raise CorruptImage("empty file" if not data else "not an image format Pillow knows") from None
    except Image.DecompressionBombError as err:
        raise TooLarge(f"{err} (Pillow's limit)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptImage(str(err) or type(err).__name__) from None
    return Decoded(pixels, encoding, narrowed)


def encode_pixels(pixels: np.ndarray, encoding: str, quality: int) -> bytes:
    if encoding == "raw":
        return pixels.tobytes()
    buffer = io.BytesIO()
    if encoding == "jpeg":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    else:
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def shrink(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Resize so the longer side is `max_side` (antialiased), keeping the aspect ratio."""
    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
