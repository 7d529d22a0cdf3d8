"""The development accounts ``./streamwise up`` creates, one per role (public passwords)."""

from __future__ import annotations

from streamwise_core.adapters.registry import migrate
from streamwise_webapp.accounts import Accounts, Role

DEMO_ACCOUNTS = (
    ("viewer", "viewer-password", Role.VIEWER),
    ("operator", "operator-password", Role.OPERATOR),
    ("admin", "admin-password", Role.ADMIN),
)


def ensure_demo_accounts(database_url: str) -> None:
    """Migrate the registry and add the demo people unless they exist."""
    migrate(database_url)
    accounts = Accounts.from_url(database_url)
    try:
        for username, password, role in DEMO_ACCOUNTS:
            accounts.ensure_user(username, password, role)
    finally:
        accounts.close()
