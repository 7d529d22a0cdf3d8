"""How much of a model's history is kept: blobs in Redis and rows in the SQL registry."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Retention(BaseModel):
    """Which version blobs of a model stay in Redis (``STREAMWISE_RETENTION__*``); every
    other one is deleted after each publication.

    Kept: the newest ``keep_last`` versions; the current one; the last ``rollback_window``
    versions that were current (what a rollback can go back to); every version that was current
    during the last ``grace_s`` (a predictor told of one a moment ago may still be fetching it);
    and the versions an operator pinned.
    """

    model_config = ConfigDict(frozen=True)

    keep_last: int = Field(default=20, ge=1)
    rollback_window: int = Field(default=10, ge=0)
    grace_s: float = Field(default=60.0, ge=0)
    most_per_prune: int = Field(default=1000, ge=1)
    """Most blobs one pruning deletes: a backlog goes over several publications, never
    holding Redis for long."""
    registry_full: int = Field(default=1000, ge=1)
    """The registry keeps the rows of a model's newest versions in full, this many..."""
    registry_sampled: int = Field(default=500, ge=1)
    """...and at most this many of the older ones, evenly spread over the model's life (charts
    still reach back to its first version); rows an audit entry or a pin names always stay."""
