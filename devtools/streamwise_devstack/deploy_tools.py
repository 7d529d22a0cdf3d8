"""``streamwise images``: the tools and images that running compose and Kubernetes for real needs.

``prepare`` builds everything the real-deployment tests use (Docker Compose, Prometheus, etcd,
Kubernetes and CoreDNS from the Go module proxy, a Debian base image, the local equivalents of
the third-party images, the pause image of the test cluster) into the cache; a second run finds
it there. ``streamwise test`` starts it in the background while the
other tiers run, and the real tier's fixtures wait for it on the same locks.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .docker_engine import DockerEngine
from .go_tools import ensure_compose, ensure_coredns, ensure_etcd, ensure_kubernetes, ensure_prometheus
from .kube_cluster import NODE_COMPONENTS, ensure_pause_image
from .local_images import BASE_IMAGE, LOCAL_IMAGES, build_local_images
from .process import _exit_cleanly_on_sigterm

images = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


@images.command("build-local")
def build_local(
    use_host_engine: Annotated[bool, typer.Option(help="Build in the host's Docker engine if one answers (else a private dockerd).")] = True,
) -> None:
    """Build the local equivalents of the third-party images (Debian packages, Maven Central, the Go module proxy)."""
    with DockerEngine(use_host_engine=use_host_engine) as engine, console.status("building the local images…"):
        built = build_local_images(engine)
        private = not engine.external
    table = Table("variable", "image", title=f"built on {BASE_IMAGE}")
    for variable, name in built.items():
        table.add_row(variable, name)
    console.print(table)
    if private:
        console.print(f"no Docker engine answered: they are in a private engine's store ({engine.data_root}), which the "
                      "real-deployment tests use; start your engine and run this again to have them there")
    else:
        console.print("pass them to compose, e.g. " + " ".join(f"{v}={n}" for v, n in built.items()) + " docker compose up --build")


@images.command("prepare")
def prepare() -> None:
    """Build what the real-deployment tests need (compose, Prometheus, base and local images, etcd,
    Kubernetes' control plane and node, CoreDNS, the pause image) into the cache."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _exit_cleanly_on_sigterm()  # `streamwise test` stops it early when pytest ends first
    console.print(f"compose: {ensure_compose()}")
    console.print(f"prometheus: {ensure_prometheus()}")  # the binary of its local image
    with DockerEngine() as engine:
        build_local_images(engine)
        pause = ensure_pause_image(engine)
    console.print(f"images: {', '.join(image.name for image in LOCAL_IMAGES)}, {pause}")
    console.print(f"etcd: {ensure_etcd()}")
    console.print(f"kubernetes: {', '.join(str(p) for p in ensure_kubernetes(NODE_COMPONENTS).values())}")
    console.print(f"coredns: {ensure_coredns()}")


if __name__ == "__main__":
    images()
