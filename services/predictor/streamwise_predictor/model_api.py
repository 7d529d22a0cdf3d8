"""GET /v1/model: the version being served, the swaps and refusals, and the shadowed challengers."""

from __future__ import annotations

from fastapi import APIRouter

from streamwise_core.adapters.http import Problem

from .deps import ServicesDep, served
from .settings import PredictorSettings


def router(settings: PredictorSettings) -> APIRouter:
    """GET /v1/model; it reports ``settings.shadow_sample``."""
    api = APIRouter()

    @api.get("/v1/model", responses={503: {"model": Problem, "description": "No verified model loaded yet."}})
    async def current_model(services: ServicesDep) -> dict[str, object]:
        """The version being served, its metrics, and any refused versions."""
        model = served(services)
        watcher, shadow = services.watcher, services.shadow
        return {
            "meta": model.meta.model_dump(mode="json"),
            "generation": model.generation,
            "swaps": services.holder.swaps,
            "refused": watcher.refused,
            "missing_versions": watcher.missing,
            "shadow": {
                "models": {m.meta.model: m.meta.version for m in services.shadow_models.challengers()},
                "sample": settings.shadow_sample, "scored": shadow.scored,
                "dropped": shadow.dropped,
            },
        }

    return api
