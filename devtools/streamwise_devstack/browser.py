"""Headless Chromium for the browser tests: Debian's package, driven by Playwright for Python.

Playwright never downloads a browser here (no CDN at run time): the tests launch the
Chromium that ``apt-get install chromium`` puts on the machine, by its path.
"""

from __future__ import annotations

import shutil

from .packages import ensure_debian_packages

__all__ = ["CHROMIUM_PACKAGES", "chromium_args", "ensure_chromium", "find_chromium"]

# fontconfig pulls in a font (fonts-dejavu-core), so screenshots show text, not boxes.
CHROMIUM_PACKAGES = {"chromium": "chromium", "fc-list": "fontconfig"}


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or another Chromium on PATH), else None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str:
    """The Chromium binary, installed from Debian's packages when missing (as root)."""
    return ensure_debian_packages(CHROMIUM_PACKAGES)["chromium"]


def chromium_args() -> list[str]:
    """Flags for a root user in a container: no sandbox (needs user namespaces), no /dev/shm limit."""
    return ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
