"""A PostgreSQL that speaks only TLS (a certificate of its own test CA) and only to password roles
(``scram-sha-256``), for the tests of the registry's security.

``pg_hba.conf`` has one line, ``hostssl`` on 127.0.0.1 with ``scram-sha-256`` (and a client
certificate of the CA with ``client_certificates``): no trust, no plaintext, no Unix socket. The
roles, each with a random password that URL-encoding must carry (``%``, ``@``, ``/``, …): the
superuser ``postgres`` (test setup), the owner ``streamwise_owner`` that owns the database (it
migrates and grants), and one login role per service, ``streamwise_<service>``, with no right
until the owner grants it (``streamwise_core.adapters.registry.grants``). ``url_of(role)`` is the
``STREAMWISE_DATABASE_URL`` of a client of that role.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql

from streamwise_core.adapters.registry.access import SERVICE_ACCESS

from .postgres_server import SUPERUSER, PostgresServer
from .test_ca import TestCA

__all__ = ["OWNER", "SecuredPostgresServer"]

OWNER = "streamwise_owner"
PASSWORD_PUNCTUATION = "%@:/?#&+= ~"
"""Every password ends with these: a URL carries them only if encoded, a config parser's ``%`` too."""


class SecuredPostgresServer(PostgresServer):
    """``SecuredPostgresServer(dir)``: TLS and passwords only; ``roles``: service → its role."""

    def __init__(self, data_dir: Path, *, services: list[str] | None = None, client_certificates: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.roles = {service: f"streamwise_{service}" for service in (list(SERVICE_ACCESS) if services is None else services)}
        self.passwords = {name: secrets.token_urlsafe(12) + PASSWORD_PUNCTUATION
                          for name in [SUPERUSER, OWNER, *self.roles.values()]}
        self.client_certificates = client_certificates
        self.tls = self.data_dir / "tls"
        self.settings |= {"ssl": "on", "password_encryption": "scram-sha-256", "log_connections": "on"}

    # -- what clients use ----------------------------------------------------------------
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
        """The superuser's URL (test setup only)."""
        return self.url_of(SUPERUSER)

    @property
    def owner_url(self) -> str:
        return self.url_of(OWNER)

    def url_of(self, role: str, *, password: str | None = None, tls: bool = True, client_cert: bool | None = None,
               database: str | None = None, **query: str) -> str:
        """The SQLAlchemy URL of a client of ``role`` (``password``: its own unless given; ``""``:
        none); TLS with the server's certificate verified (``sslmode=verify-full``) and, if
        ``client_cert`` (default: when the server demands one), the client's certificate;
        ``tls=False``: ``sslmode=disable``; ``query``: more libpq options, or these replaced."""
        secret = self.passwords[role] if password is None else password
        auth = quote(role, safe="") + (f":{quote(secret, safe='')}" if secret else "")
        options: dict[str, str] = {"sslmode": "disable"}
        if tls:
            options = {"sslmode": "verify-full", "sslrootcert": str(self.ca_file)}
            if self.client_certificates if client_cert is None else client_cert:
                options |= {"sslcert": str(self.client_cert), "sslkey": str(self.client_key)}
        options |= query
        where = f"{self.host}:{self.port}/{database or self.database}"
        return f"postgresql+psycopg://{auth}@{where}?{urlencode(options, quote_via=quote)}"

    def env(self, service: str) -> dict[str, str]:
        """The ``STREAMWISE_DATABASE_URL`` of ``service``, as its own role."""
        return {"STREAMWISE_DATABASE_URL": self.url_of(self.roles[service])}

    # -- the server ----------------------------------------------------------------------
    def _certificates(self) -> None:
        ca = TestCA(self.tls, "streamwise-test-postgres-ca")
        ca.issue("server", self.host, sans=f"IP:{self.host},DNS:localhost")
        ca.issue("client", "streamwise-test-client")
        self.client_key.chmod(0o600)  # libpq refuses a key others may read

    def _server_file(self, pgdata: Path, name: str, content: bytes) -> None:
        """A file of the server's own, in its data directory, readable by it alone."""
        path = pgdata / name
        path.write_bytes(content)
        path.chmod(0o600)
        if self.run_as is not None:
            shutil.chown(path, self.run_as, self.run_as)

    def _initdb(self, initdb: str, pgdata: Path) -> None:
        """initdb with a password for the superuser (scram), then the TLS files and the one
        ``hostssl`` line of ``pg_hba.conf``, in the data directory."""
        if not (pgdata / "PG_VERSION").is_file():
            pwfile = pgdata.parent / f".{pgdata.name}.pw"
            self._server_file(pgdata.parent, pwfile.name, self.passwords[SUPERUSER].encode())
            try:
                result = self._run([initdb, "-D", str(pgdata), "-U", SUPERUSER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
                                    "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"], cwd=pgdata)
            finally:
                pwfile.unlink(missing_ok=True)
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
        self._certificates()
        for name in ("server.crt", "server.key", "ca.crt"):
            self._server_file(pgdata, name, (self.tls / name).read_bytes())
        clientcert = " clientcert=verify-ca" if self.client_certificates else ""
        self._server_file(pgdata, "pg_hba.conf", f"hostssl all all {self.host}/32 scram-sha-256{clientcert}\n".encode())

    def argv(self, postgres: str, pgdata: Path) -> list[str]:
        return [*super().argv(postgres, pgdata),
                "-c", f"ssl_cert_file={pgdata / 'server.crt'}", "-c", f"ssl_key_file={pgdata / 'server.key'}",
                "-c", f"ssl_ca_file={pgdata / 'ca.crt'}"]

    def _connect(self, dbname: str) -> psycopg.Connection:
        """The superuser, over verified TLS with its password (the only way in)."""
        extra: dict[str, Any] = {"sslcert": str(self.client_cert), "sslkey": str(self.client_key)} if self.client_certificates else {}
        return psycopg.connect(host=self.host, port=self.port, user=SUPERUSER, password=self.passwords[SUPERUSER],
                               dbname=dbname, sslmode="verify-full", sslrootcert=str(self.ca_file), connect_timeout=2,
                               autocommit=True, **extra)

    def _ensure_database(self) -> None:
        """The database, owned by the owner role; the service roles, with their passwords and no right."""
        super()._ensure_database()
        with self._connect("postgres") as conn:
            for role in [OWNER, *self.roles.values()]:
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(self.passwords[role])))
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(self.database), sql.Identifier(OWNER)))

    def __enter__(self) -> SecuredPostgresServer:
        super().__enter__()
        return self
