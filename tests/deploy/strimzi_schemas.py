"""The parts of Strimzi's CRD schemas (kafka.strimzi.io/v1beta2) that the prod overlay uses.

No Strimzi schema ships in a package reachable offline (the io.strimzi:api jar on Maven Central
holds Java classes, not the CRD YAML), so this is a hand-written SUBSET, taken from the CRDs'
``openAPIV3Schema`` (packaging/install/cluster-operator/04*-Crd-*.yaml, Strimzi 0.4x): the
required fields, the enums and the types of every field the overlay sets. ``additionalProperties:
false`` where we write a level means a field outside this subset fails the test: extend the subset
from the CRD when the overlay needs one, do not loosen it.
"""

from __future__ import annotations

from typing import Any

_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
_RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "additionalProperties": _QUANTITY},
        "limits": {"type": "object", "additionalProperties": _QUANTITY},
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_CLUSTER_LABEL = {
    "type": "object",
    "required": ["labels"],
    "properties": {"labels": {"type": "object", "required": ["strimzi.io/cluster"]}},
}
_CONFIG = {"type": "object", "additionalProperties": {"type": ["string", "integer", "boolean", "number"]}}


def _resource(kind: str, spec: dict[str, Any], *, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
            "kind": {"const": kind},
            "metadata": {"allOf": [_METADATA, *([metadata] if metadata else [])]},
            "spec": spec,
        },
    }


KAFKA_NODE_POOL = _resource(
    "KafkaNodePool",
    {
        "type": "object",
        "required": ["replicas", "storage", "roles"],  # CRD: spec.required
        "additionalProperties": False,
        "properties": {
            "replicas": {"type": "integer", "minimum": 0},
            "roles": {"type": "array", "minItems": 1, "items": {"enum": ["controller", "broker"]}},
            "storage": {
                "type": "object",
                "required": ["type"],
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": ["ephemeral", "persistent-claim", "jbod"]},
                    "volumes": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["type"],
                            "additionalProperties": False,
                            "properties": {
                                "id": {"type": "integer", "minimum": 0},
                                "type": {"enum": ["ephemeral", "persistent-claim"]},
                                "size": {"type": "string"},
                                "class": {"type": "string"},
                                "deleteClaim": {"type": "boolean"},
                                "kraftMetadata": {"enum": ["shared"]},
                            },
                        },
                    },
                },
            },
            "resources": _RESOURCES,
        },
    },
    metadata=_CLUSTER_LABEL,
)

KAFKA = _resource(
    "Kafka",
    {
        "type": "object",
        "required": ["kafka"],
        "additionalProperties": False,
        "properties": {
            "kafka": {
                "type": "object",
                "required": ["listeners"],
                "additionalProperties": False,
                "properties": {
                    "version": {"type": "string"},
                    "metadataVersion": {"type": "string"},
                    "listeners": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "port", "type", "tls"],  # GenericKafkaListener
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "pattern": "^[a-z0-9]{1,11}$"},
                                "port": {"type": "integer", "minimum": 9092},
                                "type": {"enum": ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]},
                                "tls": {"type": "boolean"},
                            },
                        },
                    },
                    "config": _CONFIG,
                },
            },
            "entityOperator": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"topicOperator": {"type": "object"}, "userOperator": {"type": "object"}},
            },
        },
    },
)

KAFKA_TOPIC = _resource(
    "KafkaTopic",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "topicName": {"type": "string"},
            "partitions": {"type": "integer", "minimum": 1},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
            "config": _CONFIG,
        },
    },
    metadata=_CLUSTER_LABEL,
)

SCHEMAS = {"Kafka": KAFKA, "KafkaNodePool": KAFKA_NODE_POOL, "KafkaTopic": KAFKA_TOPIC}
