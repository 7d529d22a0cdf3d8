"""A redis-server that speaks only TLS (a certificate of its own test CA) and only to ACL users,
for the tests of the services' Redis security.

The ``default`` user is off: a client without credentials is refused. Every user has a random
password; ``admin`` may do everything (test setup), a service's user may do nothing until
``grant`` gives it the rules of that service (:mod:`streamwise_core.adapters.redis_access`) for one
application. ``url(user)`` is the ``STREAMWISE_REDIS_URL`` of a service of that user.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import redis

from streamwise_core.adapters.redis_access import SERVICE_OPERATIONS, acl_rules

from .redis_server import RedisServer
from .test_ca import TestCA

__all__ = ["ADMIN", "SecuredRedisServer"]

ADMIN = "admin"


class SecuredRedisServer(RedisServer):
    """``SecuredRedisServer(dir)``: TLS only, one user per service with a Redis user and ``admin``.

    ``client_certificates``: the server also demands a client certificate of its CA
    (``tls-auth-clients yes``); ``client_cert``/``client_key`` are one.
    """

    def __init__(self, data_dir: Path, *, users: list[str] | None = None, client_certificates: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        names = list(SERVICE_OPERATIONS) if users is None else users
        self.passwords = {name: secrets.token_urlsafe(18) for name in [ADMIN, *names]}
        self.client_certificates = client_certificates
        self.tls = self.data_dir / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls / "ca.crt"

    @property
    def client_cert(self) -> Path:
        return self.tls / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.tls / "client.key"

    @property
    def url(self) -> str:
        """The admin's URL."""
        return self.url_of(ADMIN)

    def url_of(self, user: str | None, *, password: str | None = None, tls: bool = True, **query: str) -> str:
        """The URL of a client of ``user`` (``None``: no credentials); ``tls=False``: plaintext,
        which the server refuses; ``query``: more ``from_url`` options."""
        auth = ""
        if user is not None:
            secret = password if password is not None else self.passwords[user]
            auth = f"{quote(user, safe='')}:{quote(secret, safe='')}@"
        if not tls:
            return f"redis://{auth}{self.host}:{self.port}/0"
        options = {"ssl_ca_certs": str(self.ca_file), **query}
        if self.client_certificates and "ssl_certfile" not in query:
            options |= {"ssl_certfile": str(self.client_cert), "ssl_keyfile": str(self.client_key)}
        return f"rediss://{auth}{self.host}:{self.port}/0?{urlencode(options)}"

    def env(self, user: str | None) -> dict[str, str]:
        """The ``STREAMWISE_REDIS_URL`` of a service that connects as ``user``."""
        return {"STREAMWISE_REDIS_URL": self.url_of(user)}

    def _certificates(self) -> None:
        ca = TestCA(self.tls, "streamwise-test-redis-ca")
        ca.issue("server", "streamwise-test-redis-server", sans=f"IP:{self.host},DNS:localhost")
        ca.issue("client", "streamwise-test-redis-client")

    @property
    def _acl_file(self) -> Path:
        return self.data_dir / "users.acl"

    def _write_users(self) -> None:
        """The users as the server starts: ``default`` off, ``admin`` everything, the others
        nothing until granted (a restart keeps what ``grant`` saved)."""
        if self._acl_file.is_file():
            return

        def digest(password: str) -> str:
            return "#" + hashlib.sha256(password.encode()).hexdigest()

        lines = ["user default off resetpass resetkeys resetchannels -@all",
                 f"user {ADMIN} on {digest(self.passwords[ADMIN])} ~* &* +@all"]
        lines += [f"user {name} on {digest(pw)} resetkeys resetchannels -@all"
                  for name, pw in self.passwords.items() if name != ADMIN]
        self._acl_file.write_text("\n".join(lines) + "\n")

    def argv(self, binary: str) -> list[str]:
        argv = super().argv(binary)
        port = argv.index("--port")
        argv[port + 1] = "0"  # no plaintext listener
        return [*argv,
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls / "server.crt"),
                "--tls-key-file", str(self.tls / "server.key"),
                "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", "yes" if self.client_certificates else "no",
                "--aclfile", str(self._acl_file)]

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._certificates()
        self._write_users()
        super().start()

    def admin(self) -> redis.Redis:
        """A (synchronous) client of the admin user; the caller closes it."""
        return redis.Redis.from_url(self.url_of(ADMIN), socket_timeout=5.0, socket_connect_timeout=5.0)

    def _ping(self) -> bool:
        client = redis.Redis.from_url(self.url_of(ADMIN), socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()

    def grant(self, user: str, service: str, prefix: str, app: str) -> str:
        """Give ``user`` exactly the rules of ``service`` for the application ``app`` under
        ``prefix`` (replacing what it had), saved to the ACL file; returns the rules."""
        rules = acl_rules(service, prefix, app)
        client = self.admin()
        try:
            client.execute_command("ACL", "SETUSER", user, *rules.split())
            client.execute_command("ACL", "SAVE")
        finally:
            client.close()
        return rules
