"""FastAPI pieces every HTTP service shares: API keys, body limits, strict JSON, error mapping."""

from __future__ import annotations

import hmac
import inspect
import json
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Final

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamwise_core.contracts.errors import BackendUnavailable, ValidationFailed

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
MAX_JSON_DEPTH = 32
"""Deeper JSON is refused: no valid request nests more than a few levels."""
MAX_ERRORS = 100
"""Error bodies list at most this many problems (``errors`` gives the total)."""
_MAX_LOC_TEXT = 128
_MAX_MSG = 300

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-lines"})


# --------------------------------------------------------------------------- documented bodies


class Problem(BaseModel):
    """An error that is not about one field: 401, 413, 415, 503."""

    detail: str


class ProblemItem(BaseModel):
    """One problem of a refused request: where (``index``/``id`` of the item, ``loc`` inside it) and what."""

    index: int | None = Field(default=None, description="Position of the item in the request, when it has items.")
    id: str | None = Field(default=None, description="Id of the item, when it had one.")
    loc: list[str | int] = Field(description="Path of the offending field, e.g. ['features', 'amount'] or ['body'].")
    msg: str
    type: str | None = Field(default=None, description="Kind of problem, for errors found by the framework.")


class ValidationProblem(BaseModel):
    """422: the request does not match the schema; nothing of it was used."""

    detail: list[ProblemItem] = Field(description=f"At most {MAX_ERRORS} problems.")
    errors: int = Field(description="How many problems there are in all.")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses an endpoint may answer."""
    described = {
        401: (Problem, "Missing or invalid X-API-Key."),
        413: (Problem, "The body is over the size limit (declared or chunked); nothing was read further."),
        415: (Problem, "The Content-Type is not one this endpoint reads."),
        422: (ValidationProblem, "The body is not valid; `detail` names each problem; nothing was accepted."),
        503: (Problem, "A backend (Kafka, Redis, the model) is not available; retry later."),
    }
    return {code: {"model": described[code][0], "description": described[code][1]} for code in codes}


# --------------------------------------------------------------------------- API keys


def api_key_matches(keys: list[str], given: str | None) -> bool:
    """Whether ``given`` is one of ``keys``, compared in constant time."""
    presented = (given or "").encode("utf-8", "replace")
    # Compare against every key, so timing says nothing about which one nearly matched.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented, key.encode())
    return ok


def route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` less ``root_path`` when it starts with it.

    The same rule as Starlette's router (``path`` as it is when it does not start with
    ``root_path`` or goes on past it without a ``/``), written here because Starlette's
    helper for it is private.
    """
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        rest = path[len(root):]
        if not rest or rest[0] == "/":
            return rest
    return path


def first_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase bytes), decoded latin-1: what
    ``request.headers.get`` gives, without building the ``Headers`` of the request."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


_KEY_HEADER_NAME = API_KEY_HEADER.lower().encode("latin-1")
KEY_REFUSED = f"missing or invalid {API_KEY_HEADER}"
"""The ``detail`` of a 401 for a missing or wrong key."""


class ApiKeyGate:
    """Pure ASGI middleware: a request to a guarded route without one of ``keys`` in
    ``X-API-Key`` is answered 401 before anything of it (its body included) is read.

    ``guarded`` maps each (method, path) pair it checks to the route the router gives it
    (``require_api_key`` builds it). The check runs before routing, at the cost of one dict
    look-up per request: a FastAPI dependency doing the same costs its dependency solving on
    every request, about 14 % of a single-event POST to ingest. Everything else (unknown
    paths, other methods of a guarded path, /healthz, /metrics, the docs) goes through
    untouched, so 404, 405 and the open routes answer as before. A refusal carries its route
    in ``scope["route"]``, as the router would have set it, so the request metrics label the
    401 with the route template.
    """

    def __init__(self, app: ASGIApp, keys: Sequence[str], guarded: Mapping[tuple[str, str], BaseRoute]) -> None:
        self.app = app
        self.keys = list(keys)
        self.guarded = dict(guarded)

    def guarded_route(self, scope: Scope) -> BaseRoute | None:
        """The guarded route the request is for, if any."""
        method: str = scope["method"]
        path = route_path(scope)
        route = self.guarded.get((method, path))
        if route is None and path.endswith("\n"):
            # A route's pattern is ``^/path$`` and ``$`` also matches before a final newline:
            # the router hands "/v1/events\n" (sent as %0A) to the /v1/events endpoint.
            route = self.guarded.get((method, path[:-1]))
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.guarded_route(scope)
            if route is not None and not api_key_matches(self.keys, first_header(scope, _KEY_HEADER_NAME)):
                scope["route"] = route
                await json_response({"detail": KEY_REFUSED}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


API_KEY_SCHEME = "APIKeyHeader"
"""The security scheme's name in the OpenAPI document (the one FastAPI gives an ``APIKeyHeader``)."""


def document_api_key(doc: dict[str, Any], guarded: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``doc`` with the ``X-API-Key`` security scheme and the guarded operations requiring it.

    What FastAPI writes for an ``APIKeyHeader`` dependency, in the same places (and key
    order); idempotent, as the document is FastAPI's cached one.
    """
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[API_KEY_SCHEME] = {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
    for method, path in guarded:
        operation = doc.get("paths", {}).get(path, {}).get(method.lower())
        if operation is None:  # a route left out of the schema
            continue
        security = operation.setdefault("security", [])
        if {API_KEY_SCHEME: []} not in security:
            security.append({API_KEY_SCHEME: []})
    return doc


def require_api_key(app: FastAPI, keys: Sequence[str], guarded: Iterable[tuple[str, str]]) -> None:
    """Refuse requests to the ``guarded`` (method, path) routes of ``app`` without one of
    ``keys`` in ``X-API-Key`` (``ApiKeyGate``), and say so in the OpenAPI document.

    Call it once those routes exist and before ``instrument_app``, so that the request
    metrics, added outermost after it, count the refusals too. Paths are literal (no
    ``{parameters}``): the gate finds a request's route by a dict look-up. Routes of included
    routers count (``iter_route_contexts``: ``app.routes`` holds the routers, not their routes).
    """
    routes: dict[tuple[str, str], BaseRoute] = {}
    for method, path in guarded:
        found = [
            r for r in iter_route_contexts(app.routes)
            if isinstance(r.original_route, Route) and r.path == path and method in (r.methods or ())
        ]
        if not found or found[0].param_convertors:
            raise ValueError(f"no route {method} {path} with a literal path to guard")
        routes[method, path] = found[0].original_route  # what the router puts in scope["route"]
    app.add_middleware(ApiKeyGate, keys=keys, guarded=routes)
    unguarded_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return document_api_key(unguarded_openapi(), routes)

    app.openapi = openapi  # type: ignore[method-assign]


class RequestRoute(APIRoute):
    """A route whose endpoint is ``async def endpoint(request: Request) -> Response``, called as
    it is: FastAPI documents it like any route (its ``openapi_extra`` request body, status,
    responses) but does not solve dependencies or serialise a response model for it, work such
    an endpoint has no use for (FastAPI's custom route class, its way to change how a route
    handles requests). On ingest's single-event POST that work was ~24 % of the instructions
    of the request in process (420,820 against 321,758 without it).

    Declare them on a router of such routes only, ``APIRouter(route_class=RequestRoute)``,
    served by the app with ``include_request_routes``; an endpoint with other parameters or
    dependencies is refused, as FastAPI would have to fill them.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        if self.dependencies or len(inspect.signature(endpoint).parameters) != 1 or not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{self.path}: a RequestRoute's endpoint is `async def f(request: Request) -> Response`, with no dependencies")
        return endpoint


def include_request_routes(app: FastAPI, router: APIRouter) -> None:
    """Serve the routes of ``router``, ``RequestRoute`` ones only, as routes of ``app`` itself.

    ``app.include_router(router)`` keeps the router as one node of the app's routes that each
    request is matched through (FastAPI 0.137 on: once to select it, again to dispatch in
    it): ~7 µs more on ingest's single-event POST in process (~19 %), on the very routes a
    ``RequestRoute`` is for. A route is whole once its router made it (the router's prefix,
    tags, responses and dependencies are in it), and a ``RequestRoute`` solves no dependency
    to override, so the app serves and documents it as one declared on the app. Include
    routers of other routes with ``app.include_router``.
    """
    for route in router.routes:
        if not isinstance(route, RequestRoute):
            raise TypeError(f"{getattr(route, 'path', route)!r} is not a RequestRoute: include its router with app.include_router")
    app.router.routes.extend(router.routes)


# --------------------------------------------------------------------------- services


def services_if_started(request: Request) -> Any:
    """What the app's lifespan put on ``app.state.services`` (the clients a handler needs), or
    ``None`` before it has (the health probes answer then too)."""
    return getattr(request.app.state, "services", None)


def started_services(request: Request) -> Any:
    """``services_if_started``, or 503 "starting up" before the lifespan made them."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise HTTPException(status_code=503, detail="starting up")
    return services


# --------------------------------------------------------------------------- body size


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes, chunked uploads included."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status_code=413, detail=f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyTooLarge(HTTPException):
    """Raised by ``BodyLimit``'s ``receive`` once a request body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"body larger than {limit} bytes")


class BodyLimit:
    """Pure ASGI middleware: a request body over ``max_bytes`` ends the request with 413.

    It counts the body as the app reads it, chunked uploads included, and raises
    ``BodyTooLarge`` (an ``HTTPException``) from ``receive`` as soon as the count passes the
    limit; a declared ``Content-Length`` over the limit is refused on the first read,
    before any byte of it is read. Nothing is read before the app asks, so a request
    refused earlier (401 for a missing API key) costs no body at all.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes
        declared = b""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":  # the last one counts, as in a dict of the headers
                declared = value
        too_large = declared.isdigit() and int(declared) > max_bytes
        size = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal size
            if too_large:
                raise BodyTooLarge(max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge as exc:
            if started:  # the app answered already and read on: nothing more to say
                raise
            response = JSONResponse(status_code=413, content={"detail": exc.detail})
            await response(scope, receive, send)


# --------------------------------------------------------------------------- strict JSON


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def require_media_type(content_type: str | None, allowed: frozenset[str]) -> str:
    """The media type of the request; 415 unless it is one of ``allowed`` (absent means JSON)."""
    kind = media_type(content_type)
    if not kind:
        return "application/json"
    if kind in allowed or (kind.startswith("application/") and kind.endswith("+json") and "application/json" in allowed):
        return kind
    shown = kind[:64]
    raise HTTPException(
        status_code=415, detail=f"unsupported Content-Type {shown!r}; send one of: {', '.join(sorted(allowed))}"
    )


def decode_utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed([{"loc": ["body"], "msg": f"body is not UTF-8 (byte {exc.start})"}]) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_deep(value: Any, depth: int = 0) -> bool:
    if depth > MAX_JSON_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_too_deep(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_too_deep(v, depth + 1) for v in value)
    return False


def loads_strict(text: str, where: list[Any]) -> Any:
    """Standard JSON only: no NaN/Infinity, no absurd nesting; ``ValidationFailed`` at ``where`` otherwise."""
    if not text.strip():
        raise ValidationFailed([{"loc": where, "msg": "empty body: expected JSON"}])
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValidationFailed([{"loc": where, "msg": "JSON nested too deeply"}]) from None
    except ValueError as exc:  # JSONDecodeError, the constants above, and integers past 4300 digits
        raise ValidationFailed([{"loc": where, "msg": f"invalid JSON: {str(exc)[:200]}"}]) from None
    if _too_deep(value):
        raise ValidationFailed([{"loc": where, "msg": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"}])
    return value


class _NotJson:
    """Marker: ``loads_quick`` could not read the body."""


NOT_JSON: Final = _NotJson()


def loads_quick(body: bytes) -> Any:
    """``body`` read by orjson, or ``NOT_JSON`` for anything orjson refuses.

    orjson is strict where ``loads_strict`` is (no NaN/Infinity, valid UTF-8 only) but nests
    up to 1,024 levels and reads integers past 64 bits as floats. So it is a fast path only:
    a caller uses the value when it checks its whole shape (a shallow one) and finds it valid,
    and otherwise reads the body again with ``loads_strict``, whose verdicts it reports.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return NOT_JSON


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response encoded by orjson (plain ``str``/``int``/``float``/``bool``/``None``,
    lists and dicts): what ``JSONResponse`` sends, without the ``json`` module's cost."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


# --------------------------------------------------------------------------- errors


def _clip(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    return value


def public_error(error: dict[str, Any]) -> dict[str, Any]:
    """One problem as clients see it: known keys only, long texts cut (never the input itself)."""
    out: dict[str, Any] = {}
    if "index" in error:
        out["index"] = error["index"]
    if "id" in error:
        out["id"] = _clip(error["id"], _MAX_LOC_TEXT)
    out["loc"] = [
        part if isinstance(part, int) and not isinstance(part, bool) else _clip(str(part), _MAX_LOC_TEXT)
        for part in error.get("loc", ())
    ]
    out["msg"] = _clip(str(error.get("msg", "")), _MAX_MSG)
    if "type" in error:
        out["type"] = _clip(str(error["type"]), _MAX_LOC_TEXT)
    return out


def problem_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"detail": [public_error(e) for e in errors[:MAX_ERRORS]], "errors": len(errors)}


def install_error_handlers(app: FastAPI) -> None:
    """Map project errors to HTTP: bad input 422, a backend that is down 503."""

    @app.exception_handler(ValidationFailed)
    async def _invalid(_: Request, exc: ValidationFailed) -> JSONResponse:
        return JSONResponse(status_code=422, content=problem_body(exc.errors))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each input back, however large (or secret) it is.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse(status_code=422, content=problem_body(errors))

    @app.exception_handler(BackendUnavailable)
    async def _unavailable(_: Request, exc: BackendUnavailable) -> JSONResponse:
        log.warning("backend unavailable: %s", exc)
        return JSONResponse(
            status_code=503,
            content={"detail": "a backend is unavailable; nothing was acknowledged: retry with the same ids"},
            headers={"Retry-After": "1"},
        )
