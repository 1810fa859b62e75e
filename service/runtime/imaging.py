"""Untrusted bytes in, a safe RGB array out: format allow-list, pixel limit, EXIF orientation.

Large images are decoded at reduced size when the caller asks for less than full resolution:
JPEGs through the decoder's DCT scaling (1/2, 1/4, 1/8: the full-size buffer never exists), PNG and
WebP (no scalable decoding) through a box reduction before the pixels become a numpy array.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageError, ImageTooManyPixels, UnsupportedMediaType
from service.runtime.types import RGBImage

THUMBNAIL_SIDE_PX = 112
THUMBNAIL_JPEG_QUALITY = 85


def sniff_format(data: bytes) -> str | None:
    """Identify the container from magic bytes, before any decoder sees the payload."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says, before any pixel is decoded."""

    format: str
    width: int  # as stored, before EXIF orientation
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """Upright RGB pixels, possibly decoded at reduced size, and the upright full-resolution size."""

    pixels: RGBImage
    full_size: tuple[int, int]  # (width, height)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def reduced(self) -> bool:
        return self.size != self.full_size

    def factor_to(self, other: tuple[int, int]) -> tuple[float, float]:
        """Per-axis factor from these pixels' coordinates to an image of size ``other`` (same picture)."""
        return other[0] / self.size[0], other[1] / self.size[1]


@contextmanager
def _opened(data: bytes, max_pixels: int) -> Iterator[tuple[Image.Image, str]]:
    """The image with only its header read; every failure mapped to a domain error."""
    if not data:
        raise ImageError("The image file is empty.")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType("Only JPEG, PNG and WebP images are accepted.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooManyPixels(
                        f"The image has {width * height} pixels; the limit is {max_pixels}.",
                        width=width,
                        height=height,
                    )
                yield img, fmt
    except (ImageTooManyPixels, UnsupportedMediaType, ImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooManyPixels(f"The image has more than {max_pixels} pixels.") from exc
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise ImageError("The image could not be decoded.") from exc


def probe_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Format and size from the header alone (microseconds); the same errors as decoding."""
    with _opened(data, max_pixels) as (img, fmt):
        return ImageInfo(fmt, img.size[0], img.size[1])


def upright_size(data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """(width, height) as displayed (after EXIF orientation), from the header alone: the frame that
    face boxes are reported in."""
    with _opened(data, max_pixels) as (img, _fmt):
        width, height = img.size
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def decode_image(data: bytes, *, max_pixels: int) -> RGBImage:
    """Decode JPEG/PNG/WebP into an upright RGB uint8 array of shape (H, W, 3), at full resolution.

    Raises UnsupportedMediaType for other formats, ImageTooManyPixels before decoding a bomb,
    and ImageError for anything that cannot be decoded.
    """
    return decode_at_least(data, max_pixels=max_pixels, min_long_side=None).pixels


def decode_at_least(data: bytes, *, max_pixels: int, min_long_side: int | None) -> DecodedImage:
    """Decode at the smallest size whose longer side is still ``min_long_side`` or more (None: full size).

    The reduction is by an integer factor (JPEG: 2, 4 or 8 in the decoder; others: a box filter), so
    an image at most ``2 * min_long_side`` long is always decoded at full resolution.
    """
    with _opened(data, max_pixels) as (img, fmt):
        width, height = img.size
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        full_size = (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)
        factor = 1 if min_long_side is None else max(1, max(width, height) // max(min_long_side, 1))
        if factor > 1 and fmt == "JPEG":
            # The decoder picks the largest DCT scale that keeps both sides at least this big.
            img.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
        img.load()
        loaded: Image.Image = img
        if factor > 1 and loaded.size == (width, height):
            loaded = _box_reduce(loaded, factor)
        rgb = _to_rgb(ImageOps.exif_transpose(loaded))
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ImageError("The image has no usable pixels.")
    return DecodedImage(np.ascontiguousarray(array), full_size)


def _box_reduce(img: Image.Image, factor: int) -> Image.Image:
    """Average ``factor`` x ``factor`` blocks; modes reduce() cannot average are flattened to RGB first."""
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = _to_rgb(img)
    return img.reduce(factor)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Flatten alpha onto white (transparent PNG cut-outs are common) and expand grayscale/palette."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "I;16" or img.mode == "I":
        return img.point(lambda v: v / 256).convert("RGB")
    return img.convert("RGB")


def thumbnail_jpeg(
    crop: RGBImage, side: int = THUMBNAIL_SIDE_PX, quality: int = THUMBNAIL_JPEG_QUALITY
) -> bytes:
    """An aligned face crop as a small square JPEG (~3-4 KB at 112 px) for people to look at."""
    height, width = crop.shape[:2]
    if (width, height) != (side, side):
        crop = np.asarray(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    bgr = np.ascontiguousarray(crop[:, :, ::-1])
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("The face crop could not be encoded.")
    return encoded.tobytes()
