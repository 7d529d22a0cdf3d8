"""The real-deployment tier: a Docker engine (the host's, or a private dockerd), Docker Compose
built from the Go module proxy, and local equivalents of the third-party images.

Everything it builds is cached under ``~/.cache/streamwise`` (``STREAMWISE_CACHE_DIR``): the
Go build and module caches, the compose binary, the debootstrap tarball and the engine's images.
Everything it starts is stopped again, and the host's network is restored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamwise_devstack.docker_engine import DockerEngine
from streamwise_devstack.go_tools import ensure_compose
from streamwise_devstack.local_images import build_local_images

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    with DockerEngine() as engine:
        yield engine


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    return ensure_compose()


@pytest.fixture(scope="session")
def local_images(docker_engine: DockerEngine) -> dict[str, str]:
    """{compose variable: local image}: KAFKA_IMAGE, REDIS_IMAGE, POSTGRES_IMAGE, PROMETHEUS_IMAGE, PYTHON_IMAGE."""
    return build_local_images(docker_engine)


@pytest.fixture(scope="session")
def build_env() -> dict[str, str]:
    """pip in the image build trusts the host's CAs (a TLS-intercepting proxy sits on this network)."""
    ca = os.environ.get("STREAMWISE_BUILD_CA_BUNDLE") or (str(SYSTEM_CA_BUNDLE) if SYSTEM_CA_BUNDLE.is_file() else "")
    return {"STREAMWISE_BUILD_CA_BUNDLE": ca} if ca else {}
