"""The HTML pages: one layout, a body per page, filled with escaped values; scripts do the rest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

STATIC_ASSETS = (
    "app.css", "common.js", "page-app.js", "page-models.js", "page-system.js", "page-audit.js", "page-signin.js",
    "vendor/chart.umd.min.js",
)

# The page loads nothing but its own origin's files; see the headers sent with it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"
)


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    title: str
    template: str
    script: str
    chart: bool = False


PAGES = {
    "app": Page("app", "/", "Application", "app.html", "page-app.js"),
    "models": Page("models", "/models", "Models", "models.html", "page-models.js", chart=True),
    "system": Page("system", "/system", "System", "system.html", "page-system.js"),
    "audit": Page("audit", "/audit", "Audit", "audit.html", "page-audit.js"),
}
SIGN_IN = Page("signin", "", "Sign in", "signin.html", "page-signin.js")


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


def load_templates() -> dict[str, Template]:
    """Read the layout and page templates shipped in the package."""
    folder = files(__package__).joinpath("templates")
    names = ["layout.html", SIGN_IN.template, *(p.template for p in PAGES.values())]
    return {name: Template(folder.joinpath(name).read_text(encoding="utf-8")) for name in names}


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


def _nav(current: Page, base: str, signed_in: bool) -> str:
    if not signed_in:
        return ""
    links = []
    for page in PAGES.values():
        attr = ' aria-current="page"' if page.name == current.name else ""
        links.append(f'<a href="{escape(base + page.path, quote=True)}"{attr}>{escape(page.title)}</a>')
    return '<nav class="pages" aria-label="Pages">' + "".join(links) + "</nav>"


def render_page(templates: dict[str, Template], page: Page, ctx: PageContext, *, signed_in: bool = True) -> str:
    """Fill the page's body and the layout; every value is HTML-escaped, the initial state JSON-encoded."""
    base = ctx.base.rstrip("/")
    values = {
        "app_name": ctx.app_name,
        "model_name": ctx.model_name,
        "base": base,
        # OpenAPI documents rather than /docs: FastAPI's docs pages load Swagger UI from a CDN.
        "ingest_api": ctx.ingest_url.rstrip("/") + "/openapi.json",
        "predictor_api": ctx.predictor_url.rstrip("/") + "/openapi.json",
        "history_limit": str(ctx.history_limit),
        "v": ctx.asset_version,
        "title": page.title,
        "page": page.name,
        "script": page.script,
    }
    escaped = {key: escape(value, quote=True) for key, value in values.items()}
    body = templates[page.template].substitute(escaped)
    chart = f'<script src="{escaped["base"]}/static/vendor/chart.umd.min.js?v={escaped["v"]}" defer></script>' if page.chart else ""
    return templates["layout.html"].substitute(
        escaped, content=body, nav=_nav(page, base, signed_in), chart_script=chart, initial=script_json(ctx.initial),
        account_hidden="" if signed_in else "hidden",
    )
