"""FastAPI pieces every HTTP service shares: API keys, body limits, error mapping."""

from __future__ import annotations

import hmac
import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from .errors import BackendUnavailable, ValidationFailed

log = logging.getLogger(__name__)


class ApiKeyCheck:
    """A dependency that admits a request carrying one of the keys in ``X-API-Key``."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    def __call__(self, request: Request) -> None:
        given = request.headers.get("x-api-key", "").encode()
        # Compare against every key, so timing says nothing about which one nearly matched.
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        if not ok:
            raise HTTPException(status_code=401, detail="missing or invalid X-API-Key")


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


def install_error_handlers(app: FastAPI) -> None:
    """Map project errors to HTTP: bad input 422, a backend that is down 503."""

    @app.exception_handler(ValidationFailed)
    async def _invalid(_: Request, exc: ValidationFailed) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": exc.errors[:100], "errors": len(exc.errors)})

    @app.exception_handler(BackendUnavailable)
    async def _unavailable(_: Request, exc: BackendUnavailable) -> JSONResponse:
        log.warning("backend unavailable: %s", exc)
        return JSONResponse(
            status_code=503,
            content={"detail": "a backend is unavailable; nothing was accepted, retry later"},
            headers={"Retry-After": "1"},
        )
