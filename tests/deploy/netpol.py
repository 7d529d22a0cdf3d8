"""A small NetworkPolicy evaluator: which (source, destination, port) flows rendered policies allow.

It implements the parts of the NetworkPolicy semantics the manifests use: pod and namespace
selectors (matchLabels, matchExpressions), ipBlock, ports, policyTypes, "no rule = all" and
"not selected by any policy of a type = allowed". Policies apply within their namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: outside the cluster
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()
    ip: str | None = None
    namespace_labels: Mapping[str, str] = field(default_factory=dict)


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None or other.namespace is not None:
            return False
        block = peer["ipBlock"]
        addr = ipaddress.ip_address(other.ip)
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(c) for c in block.get("except", [])
        )
    if other.namespace is None:
        return False  # pod/namespace selectors only match pods
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": other.namespace, **other.namespace_labels}
        if not selects(peer["namespaceSelector"], ns_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], other.labels)


def _port_matches(ports: list[Mapping[str, Any]] | None, port: int) -> bool:
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") in ("TCP", "UDP") for p in ports)


def _types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])


def _allowed(policies: list[Mapping[str, Any]], direction: str, subject: Endpoint, other: Endpoint, port: int) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    applying = [
        p for p in policies
        if p["metadata"].get("namespace") == subject.namespace
        and direction in _types(p)
        and selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not applying:
        return True
    for policy in applying:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, policy["metadata"].get("namespace"), other) for peer in peers)) and _port_matches(rule.get("ports"), port):
                return True
    return False


def flows(policies: Iterable[Mapping[str, Any]], sources: Iterable[Endpoint], destinations: Iterable[Endpoint]) -> set[tuple[str, str, int]]:
    """Every (source, destination, port) the policies allow; a pod's flows to itself are left out."""
    policies = list(policies)
    out: set[tuple[str, str, int]] = set()
    for src in sources:
        for dst in destinations:
            if src.name == dst.name:
                continue
            for port in dst.ports:
                egress = src.namespace is None or _allowed(policies, "Egress", src, dst, port)
                ingress = dst.namespace is None or _allowed(policies, "Ingress", dst, src, port)
                if egress and ingress:
                    out.add((src.name, dst.name, port))
    return out
