"""Turn a request body into a list of JSON items: one object, a JSON list, or NDJSON."""

from __future__ import annotations

from typing import Any

from streamwise_core.errors import ValidationFailed
from streamwise_core.http import MAX_JSON_DEPTH, NDJSON_TYPES, decode_utf8, loads_strict, media_type

__all__ = ["MAX_DEPTH", "NDJSON_TYPES", "parse_items"]

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
