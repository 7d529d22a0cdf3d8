"""The key every migrator takes (``pg_advisory_xact_lock``) before it upgrades the registry."""

MIGRATION_LOCK = 0x5354_5257_4D49_4752  # "STRWMIGR"
