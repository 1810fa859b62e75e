"""Start-up repair of subjects stored before the edge refused what cannot be served.

Older releases stored subject metadata with lone surrogates (no UTF-8 response can carry them:
every read of the subject, and every listing holding it, answered 500) and metadata nested
hundreds deep or megabytes large. This step, run by the store's migrations at every start-up,
finds such rows and repairs them, logging each one:

- a lone surrogate in the name, a metadata key or a string becomes U+FFFD;
- metadata nested deeper, or larger, than the service accepts today is moved aside: the row's
  metadata becomes ``{"_unservable_metadata": "<the old metadata as JSON text>"}`` (MOVED_ASIDE_KEY),
  a readable string, so nothing is lost and the client can restructure it.

The bounds are the configured ones (``FACES_MAX_METADATA_DEPTH``/``_BYTES``) when the service starts
the store; other tools that open it only repair what no configuration can serve (surrogates, and
nesting deeper than the largest configurable depth). Rows already repaired are left alone, so the
step is idempotent, and two processes repairing at once write the same values.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, String, Table, cast, select, update

logger = logging.getLogger(__name__)

MOVED_ASIDE_KEY = "_unservable_metadata"
# Settings.max_metadata_depth accepts at most this; deeper metadata is refused by every configuration.
MAX_CONFIGURABLE_DEPTH = 128
_SURROGATE = re.compile("[\ud800-\udfff]")
_BATCH = 500


@dataclass(frozen=True, slots=True)
class MetadataBounds:
    """What the service accepts: nesting of objects/arrays and compact UTF-8 JSON bytes (None: any)."""

    max_depth: int = MAX_CONFIGURABLE_DEPTH
    max_bytes: int | None = None


def repair_subjects(engine: Engine, subjects: Table, collections: Table, bounds: MetadataBounds) -> int:
    """Repair the rows of ``subjects`` that cannot be served within ``bounds``; returns how many
    were changed (``collections``: for the collection names in the log)."""
    repaired = 0
    last_pk = 0
    while True:
        query = (
            select(
                subjects.c.pk,
                subjects.c.subject_id,
                subjects.c.name,
                cast(subjects.c.meta, String),
                collections.c.name,
            )
            .join(collections, collections.c.pk == subjects.c.collection_pk)
            .where(subjects.c.pk > last_pk)
            .order_by(subjects.c.pk)
            .limit(_BATCH)
        )
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return repaired
        last_pk = int(rows[-1][0])
        changes: list[tuple[int, dict[str, Any]]] = []
        for pk, subject_id, name, meta_text, collection in rows:
            values, reasons = _repair_row(name, meta_text, bounds)
            if values:
                changes.append((int(pk), values))
                logger.warning(
                    "repaired stored subject %r of collection %r: %s",
                    subject_id,
                    collection,
                    "; ".join(reasons),
                )
        if changes:
            with engine.begin() as conn:
                for pk, values in changes:
                    conn.execute(update(subjects).where(subjects.c.pk == pk).values(**values))
            repaired += len(changes)


def _repair_row(
    name: str | None, meta_text: str | None, bounds: MetadataBounds
) -> tuple[dict[str, Any], list[str]]:
    """The column values to write (none when the row can be served) and why."""
    values: dict[str, Any] = {}
    reasons: list[str] = []
    if name is not None and _SURROGATE.search(name):
        values["name"] = _SURROGATE.sub("\ufffd", name)
        reasons.append("lone surrogates in the name replaced by U+FFFD")
    try:
        meta: Any = json.loads(meta_text) if meta_text else {}
    except (ValueError, RecursionError):
        meta = None  # unreadable as JSON here (too deep for the parser): keep its text, moved aside
    if meta is None or not isinstance(meta, dict):
        if meta is None and meta_text:
            values["meta"] = {MOVED_ASIDE_KEY: _SURROGATE.sub("\ufffd", meta_text)}
            reasons.append(f"metadata that cannot be parsed moved aside under {MOVED_ASIDE_KEY!r}")
        elif meta is not None:
            values["meta"] = {MOVED_ASIDE_KEY: json.dumps(meta, ensure_ascii=False)}
            reasons.append(f"metadata that is not an object moved aside under {MOVED_ASIDE_KEY!r}")
        return values, reasons
    if _is_moved_aside(meta):
        return values, reasons
    cleaned, replaced = _without_surrogates(meta)
    depth = _depth(cleaned)
    size = len(json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode())
    if depth > bounds.max_depth or (bounds.max_bytes is not None and size > bounds.max_bytes):
        values["meta"] = {MOVED_ASIDE_KEY: json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))}
        limit = f"at most {bounds.max_depth} deep / {bounds.max_bytes or 'any'} bytes"
        reasons.append(
            f"metadata nested {depth} deep, {size} bytes ({limit}) moved aside under {MOVED_ASIDE_KEY!r}"
        )
    elif replaced:
        values["meta"] = cleaned
    if replaced:
        reasons.append(f"{replaced} lone surrogate(s) in metadata replaced by U+FFFD")
    return values, reasons


def _is_moved_aside(meta: dict[str, Any]) -> bool:
    return list(meta) == [MOVED_ASIDE_KEY] and isinstance(meta[MOVED_ASIDE_KEY], str)


def _without_surrogates(value: Any) -> tuple[Any, int]:
    """``value`` with every lone surrogate in keys and strings replaced, and how many strings changed.
    Walked without recursion (the value may nest hundreds deep)."""
    replaced = 0

    def fix(text: str) -> str:
        nonlocal replaced
        if _SURROGATE.search(text) is None:
            return text
        replaced += 1
        return _SURROGATE.sub("\ufffd", text)

    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (source, parent container, key in parent)
    while stack:
        item, parent, key = stack.pop()
        if isinstance(item, dict):
            copy: Any = {}
            for k, child in item.items():
                new_key = fix(k) if isinstance(k, str) else k
                copy[new_key] = None
                stack.append((child, copy, new_key))
        elif isinstance(item, list):
            copy = [None] * len(item)
            stack.extend((child, copy, i) for i, child in enumerate(item))
        elif isinstance(item, str):
            copy = fix(item)
        else:
            copy = item
        parent[key] = copy
    return root[0], replaced


def _depth(value: Any) -> int:
    """Objects/arrays nested in each other (a flat object is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest
