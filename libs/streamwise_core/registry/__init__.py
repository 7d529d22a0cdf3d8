"""The SQL model registry: versions, metrics and lineage, through SQLAlchemy."""

from .repository import AuditEntry, Lineage, ModelSummary, Registry, VersionRow, migrate

__all__ = ["AuditEntry", "Lineage", "ModelSummary", "Registry", "VersionRow", "migrate"]
