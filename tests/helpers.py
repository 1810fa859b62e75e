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


def giant_png(side: int = 6324, face: Path | None = None) -> bytes:
    """The hostile probe's cheap-but-expensive PNG: ``side``² RGB pixels (40 Mpx at 6324) of flat
    grey that compress to a few hundred KB, with a real photo pasted in the middle if given."""
    canvas = Image.new("RGB", (side, side), (128, 128, 128))
    if face is not None:
        with Image.open(face) as img:
            canvas.paste(img.convert("RGB"), (side // 2, side // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def enlarged_jpeg(path: Path, side: int) -> bytes:
    """A real photo resampled to ``side``×``side``: a large photo whose face fills the frame."""
    with Image.open(path) as img:
        return jpeg_bytes(img.convert("RGB").resize((side, side), Image.Resampling.BICUBIC))


def face_in_large_canvas(path: Path, size: tuple[int, int], face_side: int) -> bytes:
    """A real photo scaled to ``face_side`` and placed in a large flat frame: a small face in a big photo."""
    canvas = Image.new("RGB", size, (120, 120, 120))
    with Image.open(path) as img:
        canvas.paste(
            img.convert("RGB").resize((face_side, face_side), Image.Resampling.BICUBIC),
            (size[0] // 2, size[1] // 3),
        )
    return jpeg_bytes(canvas)
