"""Turn a request body into a list of JSON items: one object, a JSON list, or NDJSON."""

from __future__ import annotations

import json
from typing import Any

from streamwise_core.errors import ValidationFailed

NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-lines"}
MAX_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_deep(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_too_deep(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_too_deep(v, depth + 1) for v in value)
    return False


def _loads(text: str, where: list[Any]) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValidationFailed([{"loc": where, "msg": "JSON nested too deeply"}]) from None
    except ValueError as exc:
        raise ValidationFailed([{"loc": where, "msg": f"invalid JSON: {exc}"}]) from None
    if _too_deep(value):
        raise ValidationFailed([{"loc": where, "msg": f"JSON nested deeper than {MAX_DEPTH} levels"}])
    return value


def parse_items(body: bytes, content_type: str, *, max_items: int) -> list[Any]:
    """The items of ``body``; raises ``ValidationFailed`` naming where the body is broken."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed([{"loc": ["body"], "msg": f"body is not UTF-8 (byte {exc.start})"}]) from None
    media_type = content_type.split(";")[0].strip().lower()
    if media_type in NDJSON_TYPES:
        items = [_loads(line, ["body", n]) for n, line in enumerate(text.split("\n")) if line.strip()]
    else:
        value = _loads(text, ["body"])
        items = value if isinstance(value, list) else [value]
    if not items:
        raise ValidationFailed([{"loc": ["body"], "msg": "no items in the body"}])
    if len(items) > max_items:
        raise ValidationFailed([{"loc": ["body"], "msg": f"at most {max_items} items per request"}])
    return items
