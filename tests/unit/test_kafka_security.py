"""Kafka client security settings (``KafkaSettings``, ``kafka.client_options``) and each service's
least privilege (``kafka_access``); the real broker side is tests/integration/test_kafka_security.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streamwise_core.adapters.kafka import client_options
from streamwise_core.adapters.kafka_access import SERVICE_ACCESS, TopicAcl, topic_acls
from streamwise_core.adapters.settings import KafkaSettings, Settings, Topics

TOPICS = Topics.for_app("streamwise", "fraud")


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert client_options(KafkaSettings(bootstrap="k:9092")) == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_gives_every_client_a_verifying_tls_context_and_its_user() -> None:
    options = client_options(KafkaSettings(
        bootstrap="k:9093", security_protocol="SASL_SSL", sasl_username="ingest", sasl_password=SecretStr("s3cret"),
    ))
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert options == {"bootstrap_servers": "k:9093", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_plain_username": "ingest", "sasl_plain_password": "s3cret"}


def test_the_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "trainer", "SASL_PASSWORD": "pw",
                        "SASL_MECHANISM": "SCRAM-SHA-256", "SSL_CHECK_HOSTNAME": "false"}.items():
        monkeypatch.setenv(f"STREAMWISE_KAFKA__{name}", value)
    kafka = Settings().kafka
    assert (kafka.security_protocol, kafka.sasl_username, kafka.sasl_mechanism, kafka.ssl_check_hostname) == ("SASL_SSL", "trainer", "SCRAM-SHA-256", False)
    assert "pw" not in repr(kafka), "the password is a secret"
    assert client_options(kafka)["ssl_context"].check_hostname is False


@pytest.mark.parametrize(("fields", "message"), [
    ({"security_protocol": "SASL_SSL"}, "needs sasl_username and sasl_password"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "x"}, "needs sasl_username and sasl_password"),
    ({"security_protocol": "SSL", "ssl_certfile": Path("c.pem")}, "both ssl_certfile and ssl_keyfile"),
    ({"ssl_cafile": Path("ca.pem")}, "use SSL or SASL_SSL"),
])
def test_incomplete_security_settings_are_refused_with_what_is_missing(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**fields)  # type: ignore[arg-type]


def test_each_service_may_touch_only_its_own_topics() -> None:
    written = {s: {a.topic for a in topic_acls(s, TOPICS) if a.operation == "Write"} for s in SERVICE_ACCESS}
    read = {s: {a.topic for a in topic_acls(s, TOPICS) if a.operation == "Read"} for s in SERVICE_ACCESS}
    assert written == {
        "ingest": {TOPICS.events, TOPICS.labels}, "trainer": {TOPICS.models, TOPICS.dead_letters},
        "predictor": {TOPICS.predictions}, "webapp": {TOPICS.labels},
    }
    assert read == {"ingest": set(), "trainer": {TOPICS.events, TOPICS.labels}, "predictor": set(),
                    "webapp": {TOPICS.events, TOPICS.dead_letters}}
    creators = {s for s in SERVICE_ACCESS if any(a.operation == "Create" for a in topic_acls(s, TOPICS))}
    assert creators == {"trainer"}
    assert TopicAcl(TOPICS.events, "Describe") in topic_acls("ingest", TOPICS), "a producer describes what it writes"
