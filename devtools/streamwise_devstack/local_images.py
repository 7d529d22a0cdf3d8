"""Images without an image registry: a Debian base from ``debootstrap``, then the local
equivalents of the third-party images (``deploy/local-images``) built on it (Kafka's jars come
from Maven Central, Prometheus is built from the Go module proxy).

Every image carries a label with the digest of what it was built from; an image whose sources
changed is built again, an unchanged one is kept (the engine's data root is cached).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .docker_engine import DockerEngine
from .go_tools import PROMETHEUS_VERSION, ensure_prometheus
from .kafka import DEFAULT_KAFKA_VERSION, cache_root, ensure_kafka_jars
from .packages import ensure_debian_packages
from .process import run_checked

__all__ = ["BASE_IMAGE", "LOCAL_IMAGES", "LocalImage", "build_local_images", "ensure_debian_base"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "deploy" / "local-images"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_IMAGE = f"streamwise-local/debian:{DEBIAN_SUITE}"
SOURCE_LABEL = "dev.streamwise.source-sha256"


@dataclass(frozen=True)
class LocalImage:
    folder: str
    name: str
    replaces: str
    """The compose variable it is passed in (or the Dockerfile build argument, for python)."""


LOCAL_IMAGES = (
    LocalImage("python", "streamwise-local/python:3.11", "PYTHON_IMAGE"),
    LocalImage("kafka", f"streamwise-local/kafka:{DEFAULT_KAFKA_VERSION}", "KAFKA_IMAGE"),
    LocalImage("redis", "streamwise-local/redis:7", "REDIS_IMAGE"),
    LocalImage("postgres", "streamwise-local/postgres:15", "POSTGRES_IMAGE"),
    LocalImage("prometheus", f"streamwise-local/prometheus:{PROMETHEUS_VERSION}", "PROMETHEUS_IMAGE"),
)


def _label(engine: DockerEngine, image: str) -> str | None:
    result = engine.docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{SOURCE_LABEL}"}}}}', image, check=False, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def _digest(folder: Path, *extra: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for item in extra:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _context_extras(folder: str) -> tuple[dict[str, Path], list[str]]:
    """What an image's build context holds beside its folder ({name in the context: path}, each
    built or fetched first), and what identifies it in the source digest."""
    if folder == "kafka":
        libs = ensure_kafka_jars(tools=True)
        return {"libs": libs}, sorted(p.name for p in libs.glob("*.jar"))
    if folder == "prometheus":
        binary = ensure_prometheus()
        return {"prometheus": binary}, [binary.name, _sha256(binary)]
    return {}, []


def ensure_debian_base(engine: DockerEngine) -> str:
    """``streamwise-local/debian:bookworm``: a minbase debootstrap, its tarball cached."""
    if engine.has_image(BASE_IMAGE):
        return BASE_IMAGE
    tarball = cache_root() / "images" / f"debian-{DEBIAN_SUITE}-minbase.tar"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with open(tarball.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.is_file():
            debootstrap = ensure_debian_packages({"debootstrap": "debootstrap"})["debootstrap"]
            with tempfile.TemporaryDirectory(prefix="sw-debootstrap-") as tmp:
                target = Path(tmp) / "root"
                log.info("debootstrap %s (minbase) from %s", DEBIAN_SUITE, DEBIAN_MIRROR)
                run_checked([debootstrap, "--variant=minbase", DEBIAN_SUITE, str(target), DEBIAN_MIRROR], timeout=1800)
                partial = tarball.with_suffix(".partial")
                run_checked(["tar", "-C", str(target), "-cf", str(partial), "."], timeout=600)
                partial.rename(tarball)
    engine.docker("import", "--change", "CMD [\"bash\"]", str(tarball), BASE_IMAGE, timeout=600)
    return BASE_IMAGE


def build_local_images(engine: DockerEngine, *, base: str | None = None) -> dict[str, str]:
    """Build every local image whose sources changed; return {compose variable: image name}."""
    base = base or ensure_debian_base(engine)
    built = {}
    for image in LOCAL_IMAGES:
        folder = SOURCES / image.folder
        extras, identity = _context_extras(image.folder)
        source = _digest(folder, base, *identity)
        if _label(engine, image.name) != source:
            with tempfile.TemporaryDirectory(prefix=f"sw-image-{image.folder}-") as tmp:
                context = Path(tmp) / "context"
                shutil.copytree(folder, context)
                for name, path in extras.items():
                    shutil.copytree(path, context / name) if path.is_dir() else shutil.copy2(path, context / name)
                log.info("building %s", image.name)
                # The classic builder: these Dockerfiles need no BuildKit feature, and it needs no
                # buildx plugin beside the docker client.
                engine.docker("build", "--build-arg", f"BASE={base}", "--label", f"{SOURCE_LABEL}={source}",
                              "-t", image.name, str(context), timeout=1800, env={"DOCKER_BUILDKIT": "0"})
        built[image.replaces] = image.name
    return built
