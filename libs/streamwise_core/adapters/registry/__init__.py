"""The SQL model registry: versions, metrics, lineage, the roster of models and drifts."""

from .repository import AuditEntry, Lineage, ModelSummary, Registry, VersionRow, migrate
from .roster import CHALLENGER, CHAMPION, RETIRED, DriftEntry, ModelExists, RosterEntry

__all__ = [
    "CHALLENGER", "CHAMPION", "RETIRED", "AuditEntry", "DriftEntry", "Lineage", "ModelExists", "ModelSummary",
    "Registry", "RosterEntry", "VersionRow", "migrate",
]
