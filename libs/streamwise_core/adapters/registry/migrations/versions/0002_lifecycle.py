"""Model lifecycle: lineage and gate status per version, and the audit log.

Revision ID: 0002
Revises: 0001

Metric history needs no table of its own: every version (served or held back) is a row with
its metrics and publication time, which is the per-model series the charts read.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("spec_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("spec", sa.Text, nullable=True))
        batch.add_column(sa.Column("offsets_from", sa.JSON, nullable=True))
        batch.add_column(sa.Column("learned_from", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("learned_to", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="served"))
        batch.add_column(sa.Column("hold_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("gate", sa.JSON, nullable=True))
    op.create_index("ix_model_versions_model_created", "model_versions", ["app", "model", "created_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("model", sa.String(64), nullable=True),
        sa.Column("version_from", sa.Integer, nullable=True),
        sa.Column("version_to", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_log_app_at", "audit_log", ["app", "at"])
    op.create_index("ix_audit_log_model", "audit_log", ["app", "model"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_model", "audit_log")
    op.drop_index("ix_audit_log_app_at", "audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_model_versions_model_created", "model_versions")
    with op.batch_alter_table("model_versions") as batch:
        for column in ("gate", "hold_reason", "status", "learned_to", "learned_from", "offsets_from", "spec", "spec_sha256"):
            batch.drop_column(column)
