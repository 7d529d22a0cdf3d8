"""Alembic environment: runs migrations against ``sqlalchemy.url`` from the config; with the
attribute ``grant_roles`` (service → PostgreSQL role), grants each role its rights in the same
transaction (``registry/grants.py``)."""

from alembic import context
from sqlalchemy import create_engine, text

from streamwise_core.adapters.registry.grants import apply_grants
from streamwise_core.adapters.registry.migrations_lock import MIGRATION_LOCK
from streamwise_core.adapters.registry.tables import Base

config = context.config


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "migrate() sets sqlalchemy.url"
    roles = config.attributes.get("grant_roles")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # The trainer, the web app's init container and compose's migrate step may all
                # start at once: one migrates, the others wait here, then find the schema at head.
                # Held until the transaction ends (PostgreSQL runs the whole upgrade in one).
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
            if roles:
                # The new schema and its rights commit together: a service waiting on the lock
                # never finds a table it may not use yet.
                apply_grants(connection, roles)
    engine.dispose()


run()
