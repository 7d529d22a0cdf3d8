"""The application page's endpoints: the live feed, feedback that becomes a label, and a
prediction for features a person types."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from streamwise_core.adapters.registry import AuditEntry
from streamwise_core.contracts.errors import ValidationFailed
from streamwise_core.contracts.events import ID_PATTERN, LabelReceived, utcnow
from streamwise_core.contracts.schema import validator
from streamwise_core.contracts.store_types import serving

from .auth import AUTH_RESPONSES, Principal, require_operator, require_viewer
from .deps import ServicesDep
from .feed import Feedback, FeedItem, Label, confidence
from .upstream import UpstreamRefused
from .views import Problem

router = APIRouter(prefix="/api/v1", tags=["application"])
Viewer = Annotated[Principal, Depends(require_viewer)]
Operator = Annotated[Principal, Depends(require_operator)]
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"model": Problem, "description": "Kafka or the predictor is unavailable."}}


class FeatureField(BaseModel):
    name: str
    type: str
    required: bool
    values: list[str] | None


class AppInfo(BaseModel):
    """What the prediction form and the feedback buttons need to know about the application."""

    app: str
    task: str
    label_name: str
    classes: list[Any] | None = Field(description="Possible labels (`null` for regression).")
    champion: str
    features: list[FeatureField]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="The event's id.")
    label: Label = Field(description="The true outcome: confirms the prediction or corrects it.")
    prediction: Label | None = Field(default=None, description="What the model had said (for the audit log).")


class FeedbackResult(BaseModel):
    id: str
    label: Label
    topic: str
    by: str


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any]


class PredictResult(BaseModel):
    id: str
    prediction: Label | None
    confidence: float | None
    probabilities: dict[str, float] | None
    model: str
    version: int


@router.get("/app", responses=AUTH_RESPONSES)
async def app_info(_: Viewer, services: ServicesDep) -> AppInfo:
    """The application's features, task and labels."""
    spec = services.settings.spec
    champion = await services.store.champion()
    return AppInfo(
        app=spec.name, task=spec.task.value, label_name=spec.label.name,
        classes=list(spec.classes) if spec.classes is not None else None,
        champion=serving(champion, spec.model.name).model,
        features=[FeatureField(name=n, type=f.type.value, required=f.required, values=list(f.values) if f.values else None)
                  for n, f in spec.features.items()],
    )


@router.get("/feed", responses=AUTH_RESPONSES)
async def feed(_: Viewer, services: ServicesDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[FeedItem]:
    """Sampled incoming events with the champion's prediction, newest first (live: `/api/v1/live?channels=feed`)."""
    return services.feed.items(limit)


@router.post(
    "/feedback", status_code=202,
    responses={**AUTH_RESPONSES, **UNAVAILABLE, 422: {"description": "The label does not fit the task."}},
)
async def feedback(body: FeedbackRequest, principal: Operator, services: ServicesDep) -> FeedbackResult:
    """Confirm or correct a prediction: the outcome is written to the labels topic, and the
    trainer learns it like any late label (once per event id)."""
    spec = services.settings.spec
    problem = validator(spec).label_error(body.label)
    if problem:
        raise ValidationFailed([{"loc": ["body", "label"], "msg": problem}])
    now = utcnow()
    await services.labels.write(LabelReceived(
        id=body.id, label=body.label, timestamp=now, received_at=now, source=f"webapp:{principal.actor}"[:128],
    ))
    item = services.feed.record_feedback(body.id, Feedback(label=body.label, by=principal.actor, at=now))
    if item is not None:
        services.hub.publish("feed", item.model_dump_json())
    details: dict[str, Any] = {"event_id": body.id, "label": body.label}
    predicted = body.prediction if body.prediction is not None else (item.prediction if item else None)
    if predicted is not None:
        details["prediction"] = predicted
        details["correct"] = predicted == body.label
    entry = AuditEntry(app=spec.name, actor=principal.actor, action="feedback", model=spec.model.name,
                       reason="confirmed" if details.get("correct") else "corrected" if "correct" in details else "",
                       details=details)
    await asyncio.to_thread(services.registry.record_audit, entry)
    return FeedbackResult(id=body.id, label=body.label, topic=services.settings.topics.labels, by=principal.actor)


@router.post(
    "/predict",
    responses={**AUTH_RESPONSES, **UNAVAILABLE, 422: {"description": "Features that do not match the schema."}},
)
async def predict(body: PredictRequest, _: Viewer, services: ServicesDep) -> PredictResult:
    """The champion's prediction for features a person typed (asked of the predictor)."""
    checked = validator(services.settings.spec)(body.features)
    if isinstance(checked, list):
        raise ValidationFailed([{**e, "loc": ["body", *e["loc"]]} for e in checked])
    try:
        answer = await services.predictor.predict(body.features, event_id=f"web-{uuid.uuid4().hex}")
    except UpstreamRefused as exc:
        status = 503 if exc.status == 503 else 502
        detail = "no model is served yet" if exc.status == 503 else f"the predictor answered {exc.status}: {exc.detail}"
        raise HTTPException(status_code=status, detail=detail) from exc
    return PredictResult(
        id=answer["id"], prediction=answer.get("prediction"), probabilities=answer.get("probabilities"),
        confidence=confidence(answer.get("prediction"), answer.get("probabilities")), model=answer["model"],
        version=answer["version"],
    )
