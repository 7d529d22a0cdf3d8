"""The SQL model registry: versions, metrics and lineage, through SQLAlchemy."""

from .repository import Registry, VersionRow, migrate

__all__ = ["Registry", "VersionRow", "migrate"]
