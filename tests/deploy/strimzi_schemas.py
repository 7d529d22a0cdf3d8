"""Strimzi's own CRD schemas (``vendor/strimzi-crds-1.2.0``), as JSON Schemas for offline checks.

Each CRD's ``openAPIV3Schema`` of the served version is used as it is, with one change: every
object that lists its ``properties`` (and does not say ``x-kubernetes-preserve-unknown-fields``)
refuses other fields, as ``kubectl apply --server-side`` does with strict field validation
(the API server would otherwise prune them silently). The real API server check is in
``tests/deploy/real``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

CRD_DIR = Path(__file__).with_name("vendor") / "strimzi-crds-1.2.0"
GROUP = "kafka.strimzi.io"
VERSION = "v1"


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@cache
def crds() -> dict[str, dict[str, Any]]:
    """kind -> the CRD, for every vendored Strimzi CRD."""
    found = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        found[crd["spec"]["names"]["kind"]] = crd
    return found


@cache
def schema(kind: str) -> dict[str, Any]:
    """The strict JSON Schema of ``kind`` at ``kafka.strimzi.io/v1``."""
    [version] = [v for v in crds()[kind]["spec"]["versions"] if v["name"] == VERSION and v.get("served")]
    body = _strict(version["schema"]["openAPIV3Schema"])
    body["properties"]["apiVersion"] = {"const": f"{GROUP}/{VERSION}"}
    body["properties"]["kind"] = {"const": kind}
    body["properties"]["metadata"] = {"type": "object"}  # checked by the Kubernetes schemas' ObjectMeta rules below
    body["required"] = sorted({*body.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return body


def kinds() -> frozenset[str]:
    return frozenset(crds())
