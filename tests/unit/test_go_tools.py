"""The go.mod rewrite that lets Kubernetes build from the published modules; Prometheus's module versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamwise_devstack.go_tools import _build_once, keep_plugins, prometheus_module_version, staging_edits

GO_MOD = """module k8s.io/kubernetes

go 1.24.0

require (
	k8s.io/api v0.0.0
	k8s.io/sample-controller v0.0.0 // indirect
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/sample-controller => ./staging/src/k8s.io/sample-controller
	github.com/other/thing => github.com/fork/thing v1.2.3
)

replace k8s.io/client-go => ./staging/src/k8s.io/client-go // a single-line replace
"""


def test_each_staging_replace_becomes_a_requirement_of_the_published_library() -> None:
    assert staging_edits(GO_MOD, "v0.34.4") == [
        "-dropreplace=k8s.io/api", "-require=k8s.io/api@v0.34.4",
        "-dropreplace=k8s.io/sample-controller",  # not served: only the replace goes
        "-dropreplace=k8s.io/client-go", "-require=k8s.io/client-go@v0.34.4",
    ]


def test_other_replaces_are_left_alone() -> None:
    assert not [e for e in staging_edits(GO_MOD, "v0.34.4") if "fork" in e or "other" in e]


def test_binaries_are_built_once_and_only_those_missing(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def build(missing: list[str], staging: Path) -> None:
        calls.append(missing)
        for name in missing:
            (staging / name).write_text(name)

    (tmp_path / "a").write_text("there before")
    first = _build_once(["a", "b", "c"], build, tmp_path)
    second = _build_once(["a", "b", "c"], build, tmp_path)
    assert calls == [["b", "c"]], "built once, only what was missing"
    assert first == second == {name: tmp_path / name for name in "abc"}
    assert (tmp_path / "a").read_text() == "there before" and (tmp_path / "c").read_text() == "c"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")], "no staging folder left"


def test_a_failed_build_leaves_nothing_half_built(tmp_path: Path) -> None:
    def build(missing: list[str], staging: Path) -> None:
        (staging / missing[0]).write_text("half")
        raise RuntimeError("go build failed")

    with pytest.raises(RuntimeError, match="go build failed"):
        _build_once(["x", "y"], build, tmp_path)
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]


def test_prometheus_3_releases_are_their_module_versions() -> None:
    assert prometheus_module_version("v3.5.0") == "v0.305.0"
    assert prometheus_module_version("3.10.2") == "v0.310.2"
    with pytest.raises(ValueError):
        prometheus_module_version("v2.53.0")


def test_only_the_named_plugins_stay_registered(tmp_path: Path) -> None:
    registry = tmp_path / "zplugin.go"
    registry.write_text(
        "package plugin\n\nimport (\n"
        '\t// Include all plugins.\n\t_ "github.com/coredns/caddy/onevent"\n\t_ "github.com/coredns/coredns/plugin/azure"\n'
        '\t_ "github.com/coredns/coredns/plugin/cache"\n\t_ "github.com/coredns/coredns/plugin/kubernetes"\n)\n'
    )
    keep_plugins(registry, ("cache", "kubernetes"))
    assert registry.read_text() == (
        "package plugin\n\nimport (\n\t// Include all plugins.\n"
        '\t_ "github.com/coredns/coredns/plugin/cache"\n\t_ "github.com/coredns/coredns/plugin/kubernetes"\n)\n'
    )
