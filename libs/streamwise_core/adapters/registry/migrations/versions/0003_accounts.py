"""Accounts of the web app: people with a role, their sessions, and API keys for machines.

Revision ID: 0003_accounts
Revises: 0002

Secrets are never stored: passwords as scrypt hashes (salt and cost inside the string),
session tokens and API keys as SHA-256 digests of high-entropy random values.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_accounts"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts_users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("username", name="uq_accounts_users_username"),
    )
    op.create_table(
        "accounts_sessions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("accounts_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("token_sha256", name="uq_accounts_sessions_token"),
    )
    op.create_index("ix_accounts_sessions_user", "accounts_sessions", ["user_id"])
    op.create_table(
        "accounts_api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("name", name="uq_accounts_api_keys_name"),
        sa.UniqueConstraint("key_sha256", name="uq_accounts_api_keys_key"),
    )


def downgrade() -> None:
    op.drop_table("accounts_api_keys")
    op.drop_index("ix_accounts_sessions_user", "accounts_sessions")
    op.drop_table("accounts_sessions")
    op.drop_table("accounts_users")
