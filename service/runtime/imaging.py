"""Untrusted bytes in, a safe RGB array out: format allow-list, pixel limit, EXIF orientation."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageError, ImageTooManyPixels, UnsupportedMediaType
from service.runtime.types import RGBImage

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
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


def decode_image(data: bytes, *, max_pixels: int) -> RGBImage:
    """Decode JPEG/PNG/WebP into an upright RGB uint8 array of shape (H, W, 3).

    Raises UnsupportedMediaType for other formats, ImageTooManyPixels before decoding a bomb,
    and ImageError for anything that cannot be decoded.
    """
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
                img.load()
                upright = ImageOps.exif_transpose(img)
                rgb = _to_rgb(upright)
    except (ImageTooManyPixels, UnsupportedMediaType):
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
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ImageError("The image has no usable pixels.")
    return np.ascontiguousarray(array)


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
