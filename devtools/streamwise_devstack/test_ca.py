"""A throwaway certificate authority for the tests' TLS servers: a CA, then certificates it signs
(server ones with subject alternative names, client ones with a CN), made with openssl, kept in
one folder and made once."""

from __future__ import annotations

from pathlib import Path

from .packages import ensure_debian_packages
from .process import run_checked

__all__ = ["TestCA", "openssl"]


def openssl(*args: str, cwd: Path) -> None:
    openssl = ensure_debian_packages({"openssl": "openssl"})["openssl"]
    run_checked([openssl, *args], cwd=cwd, timeout=60)


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name

    @property
    def cert(self) -> Path:
        return self.folder / "ca.crt"

    def ensure(self) -> None:
        if self.cert.is_file():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={self.name}",
                 "-keyout", "ca.key", "-out", "ca.crt", cwd=self.folder)

    def issue(self, name: str, subject: str, *, organization: str | None = None, sans: str | None = None) -> tuple[Path, Path]:
        """``<name>.crt`` and ``<name>.key``, CN=``subject`` (and O=``organization``: Kubernetes reads it as
        a group; ``sans``: e.g. ``IP:127.0.0.1,DNS:localhost``), made once."""
        self.ensure()
        cert, key = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        if not cert.is_file():
            dn = (f"/O={organization}" if organization else "") + f"/CN={subject}"
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", dn, "-keyout", key.name,
                     "-out", f"{name}.csr", cwd=self.folder)
            extra: list[str] = []
            if sans:
                (self.folder / f"{name}.ext").write_text(f"subjectAltName={sans}\n")
                extra = ["-extfile", f"{name}.ext"]
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                     "-days", "2", *extra, "-out", cert.name, cwd=self.folder)
        return cert, key
