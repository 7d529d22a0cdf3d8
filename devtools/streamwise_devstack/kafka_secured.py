"""A Kafka broker that speaks only TLS with a certificate of its own test CA and authenticates every
client, by a SCRAM-SHA-512 user (SASL_SSL) or, with ``mutual_tls``, by the client's certificate
(SSL, the user is the certificate's CN); ACLs enforced (KRaft's ``StandardAuthorizer``). For the
tests of the services' Kafka security settings.

Each user is created when the storage is formatted; ``grant`` gives a user the ACLs of one service
(:mod:`streamwise_core.adapters.kafka_access`) through Kafka's own ``AclCommand``. ``settings(user)`` is
the ``KafkaSettings`` a service of that user runs with.
"""

from __future__ import annotations

import secrets
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from streamwise_core.adapters.kafka import client_options
from streamwise_core.adapters.kafka_access import topic_acls
from streamwise_core.adapters.settings import KafkaSettings, Topics

from .kafka import KafkaBroker, ensure_java, ensure_kafka_jars
from .test_ca import TestCA
from .topics import wait_for_kafka

__all__ = ["ADMIN", "SecuredKafkaBroker"]

ADMIN = "admin"
MECHANISM: Final = "SCRAM-SHA-512"


class SecuredKafkaBroker(KafkaBroker):
    """``SecuredKafkaBroker(dir, users=["ingest", ...])``: every user gets a random password."""

    def __init__(self, data_dir: Path, *, users: list[str], mutual_tls: bool = False, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.passwords = {name: secrets.token_urlsafe(18) for name in [ADMIN, *users]}
        self.mutual_tls = mutual_tls
        self.listener = "SSL" if mutual_tls else "SASL_SSL"
        self.tls = self.data_dir / "tls"
        self._ca = TestCA(self.tls, "streamwise-test-kafka-ca")

    @property
    def ca_file(self) -> Path:
        return self.tls / "ca.crt"

    def settings(self, user: str | None = ADMIN, *, password: str | None = None) -> KafkaSettings:
        """The settings of a client of ``user`` (``None``: TLS without SASL, which the broker refuses)."""
        if user is None:
            return KafkaSettings(bootstrap=self.bootstrap, security_protocol="SSL", ssl_cafile=self.ca_file)
        if self.mutual_tls:
            cert, key = self.client_certificate(user)
            return KafkaSettings(bootstrap=self.bootstrap, security_protocol="SSL", ssl_cafile=self.ca_file,
                                 ssl_certfile=cert, ssl_keyfile=key)
        return KafkaSettings(
            bootstrap=self.bootstrap, security_protocol="SASL_SSL", sasl_mechanism=MECHANISM, sasl_username=user,
            sasl_password=SecretStr(password if password is not None else self.passwords[user]), ssl_cafile=self.ca_file,
        )

    def env(self, user: str) -> dict[str, str]:
        """The ``STREAMWISE_KAFKA__*`` variables of a service that connects as ``user``."""
        return {
            "STREAMWISE_KAFKA__BOOTSTRAP": self.bootstrap, "STREAMWISE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMWISE_KAFKA__SASL_MECHANISM": MECHANISM, "STREAMWISE_KAFKA__SASL_USERNAME": user,
            "STREAMWISE_KAFKA__SASL_PASSWORD": self.passwords[user], "STREAMWISE_KAFKA__SSL_CAFILE": str(self.ca_file),
        }

    def client_certificate(self, user: str) -> tuple[Path, Path]:
        """A client certificate (CN=``user``) of the test CA and its key, made once."""
        return self._ca.issue(f"client-{user}", user)

    def _certificates(self) -> None:
        cert, key = self._ca.issue("broker", "kafka", sans=f"IP:{self.host},DNS:localhost")
        # Kafka's PEM key store: the (PKCS#8) private key, then the certificate.
        (self.tls / "broker.pem").write_text(key.read_text() + cert.read_text())

    def config(self) -> dict[str, str]:
        settings = super().config()
        jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{self.passwords[ADMIN]}";'
        listener = self.listener
        settings.update({
            "listeners": f"{listener}://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"{listener}://{self.host}:{self.port}",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{listener}:{listener}",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls / "broker.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The controller listener (loopback, in-process quorum) is plaintext: its principal is
            # ANONYMOUS, which the broker's own controller requests need. With mutual TLS the broker
            # talks to itself with its own certificate (CN=kafka).
            "super.users": f"User:{ADMIN};User:ANONYMOUS;User:kafka",
            "allow.everyone.if.no.acl.found": "false",
            "auto.create.topics.enable": "false",
        })
        if self.mutual_tls:
            settings.update({"ssl.client.auth": "required", "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT"})
        else:
            settings.update({
                "sasl.enabled.mechanisms": MECHANISM,
                "sasl.mechanism.inter.broker.protocol": MECHANISM,
                f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            })
        return settings

    def _format_args(self) -> list[str]:
        self._certificates()
        return [arg for name, password in self.passwords.items()
                for arg in ("--add-scram", f"{MECHANISM}=[name={name},password={password}]")]

    def _wait_serving(self, timeout: float, alive: Callable[[], bool]) -> None:
        wait_for_kafka(self.bootstrap, timeout, alive=alive, options=self._admin_options())

    def _admin_options(self) -> dict[str, Any]:
        options = client_options(self.settings(ADMIN))
        options.pop("bootstrap_servers")
        return options

    def grant(self, user: str, service: str, topics: Topics) -> None:
        """Give ``user`` exactly the ACLs of ``service`` on ``topics`` (one AclCommand per set of operations)."""
        by_topic: dict[str, set[str]] = defaultdict(set)
        for acl in topic_acls(service, topics):
            by_topic[acl.topic].add(acl.operation)
        by_operations: dict[frozenset[str], list[str]] = defaultdict(list)
        for topic, operations in by_topic.items():
            by_operations[frozenset(operations)].append(topic)
        config = self.tls / "admin.properties"
        if self.mutual_tls:
            cert, key = self.client_certificate(ADMIN)
            admin_pem = self.tls / "admin.pem"
            admin_pem.write_text(key.read_text() + cert.read_text())
            login = f"security.protocol=SSL\nssl.keystore.type=PEM\nssl.keystore.location={admin_pem}\n"
        else:
            login = (
                f"security.protocol=SASL_SSL\nsasl.mechanism={MECHANISM}\n"
                f'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
                f'password="{self.passwords[ADMIN]}";\n'
            )
        config.write_text(login + f"ssl.truststore.type=PEM\nssl.truststore.location={self.ca_file}\n")
        java, libs = ensure_java(), ensure_kafka_jars(self.version, tools=True)
        for ops, names in by_operations.items():
            argv = self._java_argv(java, libs, "org.apache.kafka.tools.AclCommand", "--bootstrap-server", self.bootstrap,
                                   "--command-config", str(config), "--add", "--allow-principal", f"User:{user}",
                                   *(a for op in sorted(ops) for a in ("--operation", op)),
                                   *(a for name in sorted(names) for a in ("--topic", name)), tool=True)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"AclCommand failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
