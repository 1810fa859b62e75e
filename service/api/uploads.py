"""Reading uploaded files without trusting their size."""

from __future__ import annotations

from fastapi import UploadFile

from service.errors import PayloadTooLarge


async def read_upload(upload: UploadFile, max_bytes: int, *, strict: bool = False) -> bytes:
    """Read at most ``max_bytes + 1``; oversize files come back truncated for the caller to reject,
    or raise PayloadTooLarge when ``strict``."""
    data = await upload.read(max_bytes + 1)
    if strict and len(data) > max_bytes:
        raise PayloadTooLarge(
            f"'{upload.filename or 'image'}' is larger than the {max_bytes}-byte limit.", limit=max_bytes
        )
    return data
