"""Edge checks beyond the schemas: what every store can keep and every response can carry.

SQLite and PostgreSQL disagree on what they accept (PostgreSQL refuses NUL in text, SQLite keeps
it), and a lone surrogate is stored by both but cannot be encoded into a UTF-8 response. So both
are refused here, before anything is written, identically on every store.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from service.errors import ValidationFailed

_UNSAFE = re.compile("[\x00\ud800-\udfff]")
# Longer names are not file names on any common file system (and would not fit the store's column).
MAX_FILENAME_CHARS = 255


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored and served, or None when it can."""
    found = _UNSAFE.search(value)
    if found is None:
        return None
    return "contains a NUL character" if found.group() == "\x00" else "is not valid Unicode (lone surrogate)"


def clean_text(value: str) -> str:
    """Pydantic validator: the string unchanged, or ValueError (→ 422) when it is unsafe."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"text {problem}")
    return value


def check_text(value: str, loc: list[str | int]) -> None:
    """``clean_text`` for values that do not pass through a schema (file names)."""
    problem = text_problem(value)
    if problem is not None:
        raise _invalid(loc, f"Value {problem}.", "text_invalid")


def check_filename(filename: str | None, loc: list[str | int]) -> None:
    """An uploaded file's name, kept with its face: clean text, at most MAX_FILENAME_CHARS."""
    if filename is None:
        return
    check_text(filename, loc)
    if len(filename) > MAX_FILENAME_CHARS:
        raise _invalid(loc, f"File name longer than {MAX_FILENAME_CHARS} characters.", "string_too_long")


def check_metadata(value: dict[str, Any], loc: list[str | int], max_bytes: int, max_depth: int) -> None:
    """Subject metadata a store keeps and a response serialises: nesting of at most ``max_depth``
    objects/arrays, clean strings (keys too), finite numbers, at most ``max_bytes`` of compact
    UTF-8 JSON. Walked without recursion, so a hostile depth costs nothing."""
    stack: list[tuple[Any, list[str | int], int]] = [(value, loc, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise _invalid(where, f"Metadata nests deeper than {max_depth} levels.", "metadata_too_deep")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    problem = text_problem(key)
                    if problem is not None:
                        raise _invalid(where, f"Metadata key {problem}.", "text_invalid")
                stack.append((child, [*where, key], depth + 1))
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise _invalid(where, f"Value {problem}.", "text_invalid")
        elif isinstance(item, float) and not math.isfinite(item):
            raise _invalid(where, "Numbers must be finite (no NaN or Infinity).", "finite_number")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > max_bytes:
        raise _invalid(
            loc, f"Metadata is {size} bytes of JSON; at most {max_bytes} are allowed.", "metadata_too_large"
        )


def _invalid(loc: list[str | int], msg: str, kind: str) -> ValidationFailed:
    dotted = ".".join(str(part) for part in loc)
    return ValidationFailed(f"{dotted}: {msg}", errors=[{"loc": loc, "msg": msg, "type": kind}])
