"""Find the system binaries the devstack needs, installing the Debian packages when root."""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping

__all__ = ["MissingDependency", "ensure_debian_files", "ensure_debian_packages", "find_binary", "postgres_bin_dirs"]

log = logging.getLogger(__name__)

_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
_apt_lock = threading.Lock()
_apt_updated = False


class MissingDependency(RuntimeError):
    """A binary the devstack needs is missing and could not be installed."""


def postgres_bin_dirs() -> list[str]:
    """Return Debian's /usr/lib/postgresql/<ver>/bin dirs, newest version first."""
    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin$", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)

    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)


def find_binary(name: str) -> str | None:
    """Return the path of ``name`` on PATH or in PostgreSQL's versioned bin dir, else None."""
    found = shutil.which(name)
    if found:
        return found
    for directory in postgres_bin_dirs():
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _apt(*args: str) -> None:
    cmd = ["apt-get", *args]
    log.info("running %s", " ".join(cmd))
    result = subprocess.run(cmd, env=_APT_ENV, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise MissingDependency(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{tail}")


def _install(packages: list[str]) -> None:
    """``apt-get install`` (after one ``apt-get update`` per process) as root; else say what to install."""
    global _apt_updated
    hint = f"apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingDependency(f"missing Debian packages; install them with `sudo {hint}`")
    with _apt_lock:
        if not _apt_updated:
            _apt("update")
            _apt_updated = True
        _apt("install", "-y", "--no-install-recommends", *packages)


def ensure_debian_packages(binaries: Mapping[str, str]) -> dict[str, str]:
    """Make sure every binary exists, mapping binary name -> Debian package; return their paths.

    Missing binaries are installed with ``apt-get install -y`` (after one ``apt-get update``
    per process) when running as root; otherwise MissingDependency says what to install.
    """
    paths = {name: find_binary(name) for name in binaries}
    missing = {name: binaries[name] for name, path in paths.items() if path is None}
    if not missing:
        return {name: str(path) for name, path in paths.items()}
    packages = sorted(set(missing.values()))
    _install(packages)
    for name in missing:
        paths[name] = find_binary(name)
        if paths[name] is None:
            raise MissingDependency(f"`apt-get install -y {' '.join(packages)}` succeeded but `{name}` is still not found")
    return {name: str(path) for name, path in paths.items()}


def ensure_debian_files(files: Mapping[str, str]) -> None:
    """Like :func:`ensure_debian_packages` for files off PATH (file path -> Debian package)."""
    missing = sorted({package for path, package in files.items() if not os.path.exists(path)})
    if missing:
        _install(missing)
    still = [path for path in files if not os.path.exists(path)]
    if still:
        raise MissingDependency(f"`apt-get install -y {' '.join(missing)}` succeeded but {', '.join(still)} are still missing")
