"""Image builders for tests: real LFW faces composed into the situations users send."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(image: Image.Image, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95, **save_args)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def group_photo(paths: list[Path], crop: int = 150) -> bytes:
    """Side-by-side centre crops of several LFW photos: one picture, several people."""
    tiles = []
    for path in paths:
        with Image.open(path) as img:
            w, h = img.size
            left, top = (w - crop) // 2, (h - crop) // 2
            tiles.append(img.convert("RGB").crop((left, top, left + crop, top + crop)))
    canvas = Image.new("RGB", (crop * len(tiles) + 20 * (len(tiles) + 1), crop + 40), (128, 128, 128))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (20 + i * (crop + 20), 20))
    return jpeg_bytes(canvas)


def no_face_photo() -> bytes:
    """A smooth colour gradient: a valid photo with nothing face-like in it."""
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([x * 255 // 320, y * 255 // 240, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    return png_bytes(Image.fromarray(rgb))
