"""Model versions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("examples_seen", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("offsets", sa.JSON, nullable=False),
        sa.Column("river_version", sa.String(32), nullable=False),
        sa.Column("blob_sha256", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("app", "model", "version", name="uq_model_version"),
    )
    op.create_index("ix_model_versions_app", "model_versions", ["app"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_app", "model_versions")
    op.drop_table("model_versions")
