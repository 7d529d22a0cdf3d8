"""The HTML page: a template filled with escaped values; the browser script does the rest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

STATIC_ASSETS = ("app.js", "app.css", "vendor/chart.umd.min.js")

# The page loads nothing but its own origin's files; see the headers sent with it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"
)


@dataclass(frozen=True)
class PageContext:
    app_name: str
    model_name: str
    base: str
    """URL prefix the app is mounted under (the ASGI ``root_path``), without a trailing slash."""
    ingest_url: str
    predictor_url: str
    history_limit: int
    asset_version: str
    initial: Any = None
    """JSON-able state the script renders before its live stream connects."""


def load_template() -> Template:
    """Read the page template shipped in the package."""
    return Template(files(__package__).joinpath("templates/index.html").read_text(encoding="utf-8"))


def asset_version() -> str:
    """A short digest of the static files, appended to their URLs so browsers drop stale copies."""
    digest = hashlib.sha256()
    static = files(__package__).joinpath("static")
    for name in STATIC_ASSETS:
        digest.update(static.joinpath(name).read_bytes())
    return digest.hexdigest()[:12]


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>`` or ``<!--`` can appear."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def render_page(template: Template, ctx: PageContext) -> str:
    """Fill the template; every value is HTML-escaped, the initial state JSON-encoded for a script."""
    values = {
        "app_name": ctx.app_name,
        "model_name": ctx.model_name,
        "base": ctx.base.rstrip("/"),
        # OpenAPI documents rather than /docs: FastAPI's docs pages load Swagger UI from a CDN.
        "ingest_api": ctx.ingest_url.rstrip("/") + "/openapi.json",
        "predictor_api": ctx.predictor_url.rstrip("/") + "/openapi.json",
        "history_limit": str(ctx.history_limit),
        "v": ctx.asset_version,
    }
    escaped = {key: escape(value, quote=True) for key, value in values.items()}
    return template.substitute(escaped, initial=script_json(ctx.initial))
