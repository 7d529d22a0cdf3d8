"""Bounded registry: a row of ``model_versions`` may stand for several versions once compacted.

Revision ID: 0005_compaction
Revises: 0004_champions

``Registry.compact_versions`` deletes most old rows of a model; the next kept row absorbs their
learning range (its ``offsets_from`` and ``learned_from`` move back to the earliest of theirs) and
counts them: ``stands_for`` versions in all (itself included), ``held_back_absorbed`` of which were
held back by the gate. Rows written before this migration stand for themselves alone.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_compaction"
down_revision = "0004_champions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("stands_for", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("held_back_absorbed", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("held_back_absorbed")
        batch.drop_column("stands_for")
