"""Server-Sent Events framing (text/event-stream), without I/O."""

from __future__ import annotations

import re

# The format splits lines on these only; str.splitlines() would also split on U+2028 etc.
_NEWLINE = re.compile(r"\r\n|\r|\n")


def sse_event(
    data: str, *, event: str | None = None, event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """One event; multi-line data becomes several ``data:`` lines as the format requires."""
    lines: list[str] = []
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    if event_id is not None:
        lines.append(f"id: {_one_line(event_id)}")
    if event is not None:
        lines.append(f"event: {_one_line(event)}")
    lines.extend(f"data: {line}" for line in _NEWLINE.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def sse_comment(text: str = "") -> bytes:
    """A comment line: ignored by ``EventSource``, keeps idle connections open."""
    return f": {_one_line(text)}\n\n".encode()


def _one_line(value: str) -> str:
    return _NEWLINE.sub(" ", value)
