"""Turn a request body into a list of JSON items: one object, a JSON list, or NDJSON."""

from __future__ import annotations

from typing import Any

import orjson

from streamwise_core.adapters.http import MAX_JSON_DEPTH, NDJSON_TYPES, NOT_JSON, decode_utf8, loads_quick, loads_strict, media_type
from streamwise_core.contracts.errors import ValidationFailed

__all__ = ["MAX_DEPTH", "NDJSON_TYPES", "parse_items", "quick_items"]

MAX_DEPTH = MAX_JSON_DEPTH


def parse_items(body: bytes, content_type: str, *, max_items: int) -> list[Any]:
    """The items of ``body``; raises ``ValidationFailed`` naming where the body is broken."""
    text = decode_utf8(body)
    if media_type(content_type) in NDJSON_TYPES:
        items = [loads_strict(line, ["body", n]) for n, line in enumerate(text.split("\n")) if line.strip()]
    else:
        value = loads_strict(text, ["body"])
        items = value if isinstance(value, list) else [value]
    if not items:
        raise ValidationFailed([{"loc": ["body"], "msg": "no items in the body"}])
    if len(items) > max_items:
        raise ValidationFailed([{"loc": ["body"], "msg": f"at most {max_items} items per request"}])
    return items


def quick_items(body: bytes, content_type: str, *, max_items: int) -> list[Any] | None:
    """The items of ``body`` read by orjson, or ``None`` for anything it does not read as
    ``parse_items`` would (then ``parse_items`` says why). The items are not checked for depth:
    the caller checks their whole (shallow) shape, and reads the body again otherwise."""
    if media_type(content_type) in NDJSON_TYPES:
        try:
            items = [orjson.loads(line) for line in body.split(b"\n") if line.strip()]
        except orjson.JSONDecodeError:
            return None
    else:
        value = loads_quick(body)
        if value is NOT_JSON:
            return None
        items = value if isinstance(value, list) else [value]
    return items if 0 < len(items) <= max_items else None
