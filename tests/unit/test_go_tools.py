"""The go.mod rewrite that lets Kubernetes build from the published modules."""

from __future__ import annotations

from streamwise_devstack.go_tools import staging_edits

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
