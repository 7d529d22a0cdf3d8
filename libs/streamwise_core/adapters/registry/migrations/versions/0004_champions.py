"""Champion and challengers, and drifts: which models learn from the stream, and when they drifted.

Revision ID: 0004_champions
Revises: 0003_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_champions"
down_revision = "0003_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("start", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("app", "name", name="uq_models_app_name"),
    )
    op.create_table(
        "drift_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("examples_seen", sa.Integer, nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("offsets", sa.JSON, nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_drift_events_app_model", "drift_events", ["app", "model", "detected_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_events_app_model", "drift_events")
    op.drop_table("drift_events")
    op.drop_table("models")
