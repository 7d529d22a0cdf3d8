"""docker-compose.yml: valid against the Compose specification, and consistent with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import typer.main
import yaml

from streamwise_core.adapters.redis_access import SERVICE_OPERATIONS as REDIS_OPERATIONS
from streamwise_core.adapters.redis_access import acl_rules
from streamwise_core.adapters.registry.access import SERVICE_ACCESS as REGISTRY_ACCESS
from streamwise_core.contracts.appspec import load_app_spec
from streamwise_devstack import demo_stream, redis_cli, registry_cli

from .support import (
    APP_SPEC,
    COMPOSE_FILE,
    IMAGE_APP_SPEC,
    ROOT,
    SERVICES,
    SETTINGS_CLASSES,
    compose_command,
    compose_environment,
    container_port,
    http_check,
    interpolate,
    load_compose,
    serves,
    settings_env_names,
    settings_from_env,
    specs,
)

pytestmark = pytest.mark.deploy

SCHEMA = Path(__file__).with_name("compose-spec.json")
ONE_SHOT = ("migrate", "topics")
BACKING = ("kafka", "redis", "postgres")
OBSERVABILITY = ("prometheus", "grafana")
"""The optional profile with metrics (checked in test_observability.py)."""


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $SET $$SET", env) == "x d d  x $SET"


@pytest.mark.parametrize("shell_env", [{}, {"POSTGRES_PASSWORD": "s3cret", "INGEST_PORTS": "8101-8103"}])
def test_valid_against_the_compose_specification(shell_env: dict[str, str]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(load_compose(shell_env)), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    # ... and before interpolation too, as editors check it.
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(COMPOSE_FILE.read_text())))


def test_the_one_image_runs_every_streamwise_container(compose: dict) -> None:
    services = compose["services"]
    ours = [name for name in services if name not in (*BACKING, *OBSERVABILITY)]
    assert set(ours) == {*SERVICES, *ONE_SHOT, "demo"}
    images = {services[name]["image"] for name in ours}
    assert images == {"streamwise:local"}
    # Built once: one service carries the build, the others never pull (nor build) that image.
    [builder] = [name for name in ours if "build" in services[name]]
    assert services[builder]["build"]["context"] == "."
    assert services[builder]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim"
    assert services[builder]["build"]["secrets"] == ["ca-bundle"]
    assert (ROOT / compose["secrets"]["ca-bundle"]["file"]).read_text() == "", "no extra CA by default"
    for name in ours:
        assert name == builder or services[name]["pull_policy"] == "never", name


def test_backing_services(compose: dict) -> None:
    services = compose["services"]
    kafka, redis, postgres = (services[n] for n in BACKING)
    assert kafka["image"] == "apache/kafka:4.1.1", "upstream by default (KAFKA_IMAGE replaces it)"
    kenv = compose_environment(kafka)
    assert kenv["KAFKA_PROCESS_ROLES"] == "broker,controller", "single KRaft node"
    assert "PLAINTEXT://kafka:9092" in kenv["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert redis["image"] == "redis:7"
    assert redis["command"][:1] == ["redis-server"] and "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    acl = redis["command"][redis["command"].index("--aclfile") + 1]
    assert redis["configs"] == [{"source": "redis-users", "target": acl}]
    assert postgres["image"] == "postgres:16"
    penv = compose_environment(postgres)
    assert penv["POSTGRES_DB"] == "streamwise" and penv["POSTGRES_USER"] == "streamwise"
    # Each keeps its data in a named volume declared at the top level.
    data_dirs = {"kafka": compose_environment(kafka)["KAFKA_LOG_DIRS"], "redis": "/data", "postgres": "/var/lib/postgresql/data"}
    for name, path in data_dirs.items():
        mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
        assert path in mounts, f"{name}: no volume on {path}"
        assert mounts[path] in compose["volumes"], f"{name}: {mounts[path]} is not a named volume"


@pytest.mark.parametrize("name", SERVICES)
def test_command_and_port_are_service_specs(compose: dict, name: str) -> None:
    spec = specs()[name]
    service = compose["services"][name]
    assert compose_command(service) == list(spec.argv)
    assert [container_port(p) for p in service["ports"]] == [spec.port]
    env = compose_environment(service)
    for key, value in spec.env:
        assert env[key] == value, f"{name}: {key}"


def _logins(service: dict) -> dict[str, str]:
    """Service → the environment variable ``registry migrate --login SERVICE=VARIABLE`` reads its password from."""
    argv = compose_command(service)
    return dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--login")


def _login_variables(service: dict) -> set[str]:
    return set(_logins(service).values())


@pytest.mark.parametrize("name", [*SERVICES, *ONE_SHOT])
def test_every_variable_is_a_setting_of_that_service(compose: dict, name: str) -> None:
    env = compose_environment(compose["services"][name])
    valid = settings_env_names(SETTINGS_CLASSES[name]) | _login_variables(compose["services"][name])
    unknown = sorted(set(env) - valid)
    assert not unknown, f"{name}: not settings of {SETTINGS_CLASSES[name].__name__}: {unknown}"


REDIS_USERS = {"trainer": "streamwise_trainer", "predictor": "streamwise_predictor", "webapp": "streamwise_webapp"}
DATABASE_ROLES = {"trainer": "streamwise_trainer", "webapp": "streamwise_webapp", "migrate": "streamwise"}


@pytest.mark.parametrize("name", [*SERVICES, *ONE_SHOT])
def test_each_service_reaches_only_what_it_uses_as_its_own_user(compose: dict, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kafka for all; Redis as the service's ACL user and PostgreSQL as its role, only where the
    service uses them (redis_access.SERVICE_OPERATIONS, registry/access.SERVICE_ACCESS)."""
    env = compose_environment(compose["services"][name])
    postgres = compose_environment(compose["services"]["postgres"])
    assert env["STREAMWISE_KAFKA__BOOTSTRAP"] == "kafka:9092"
    assert env["STREAMWISE_KAFKA__SECURITY_PROTOCOL"] == "PLAINTEXT", "chosen explicitly (production refuses a default)"
    assert env["STREAMWISE_KAFKA__IDEMPOTENCE"] == "true"
    assert env["STREAMWISE_APP_SPEC"] == IMAGE_APP_SPEC
    uses_redis = name in REDIS_OPERATIONS
    assert ("STREAMWISE_REDIS_URL" in env) == uses_redis, name
    if uses_redis:
        redis = urlsplit(env["STREAMWISE_REDIS_URL"])
        assert (redis.hostname, redis.port, redis.username) == ("redis", 6379, REDIS_USERS[name])
    uses_database = name == "migrate" or (name in REGISTRY_ACCESS and REGISTRY_ACCESS[name].connects)
    assert ("STREAMWISE_DATABASE_URL" in env) == uses_database, name
    if uses_database:
        db = urlsplit(env["STREAMWISE_DATABASE_URL"])
        assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql+psycopg", "postgres", 5432, "/streamwise")
        assert db.username == DATABASE_ROLES[name]
        if name == "migrate":
            assert (db.username, db.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
        else:  # the password migrate gives the service's role
            migrate = compose["services"]["migrate"]
            assert db.password == compose_environment(migrate)[_logins(migrate)[name]]
    # The service's settings accept exactly this environment (the app spec path is the image's).
    settings = settings_from_env(monkeypatch, SETTINGS_CLASSES[name], env)
    assert str(settings.app_spec) == IMAGE_APP_SPEC
    assert settings.kafka.bootstrap == "kafka:9092" and settings.kafka.idempotence is True


def test_redis_users_have_exactly_the_services_access_rules(compose: dict) -> None:
    """The ACL file compose gives Redis: `default` is the administrator behind a password (the
    health check's), each service's user has the rules of redis_access.acl_rules for the image's
    app, with the password its URL carries."""
    lines = compose["configs"]["redis-users"]["content"].strip().splitlines()
    users = {line.split()[1]: line.split()[2:] for line in lines}
    on, password, *rules = users.pop("default")
    assert (on, rules) == ("on", ["~*", "&*", "+@all"]), "all rights: AOF transactions replay as default"
    assert password == ">" + compose_environment(compose["services"]["redis"])["REDISCLI_AUTH"]
    app = load_app_spec(APP_SPEC).name
    for service, user in REDIS_USERS.items():
        on, password, *rules = users.pop(user)
        assert on == "on" and password.startswith(">")
        assert " ".join(rules) == acl_rules(service, "streamwise", app), service
        url = urlsplit(compose_environment(compose["services"][service])["STREAMWISE_REDIS_URL"])
        assert url.password == password[1:]
    assert not users, f"users no service connects as: {sorted(users)}"
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["configs"]["redis-users"]["content"]
    assert re.sub(r":-[^}]*\}", "}", raw) == redis_cli.acl_file("streamwise", app), "`streamwise redis acl` prints it"


def test_secrets_come_from_the_environment_with_marked_dev_defaults() -> None:
    text = COMPOSE_FILE.read_text()
    shell = {"POSTGRES_PASSWORD": "pw-from-env", "STREAMWISE_SIGNING_KEYS": "k1:0123456789abcdef0123",
             "STREAMWISE_API_KEYS": "key-from-env", "STREAMWISE_ENVIRONMENT": "production",
             **{f"REDIS_{s.upper()}_PASSWORD": f"redis-{s}-from-env" for s in [*REDIS_USERS, "admin"]},
             "POSTGRES_TRAINER_PASSWORD": "pg-trainer-from-env", "POSTGRES_WEBAPP_PASSWORD": "pg-webapp-from-env"}
    compose = load_compose(shell)
    services = compose["services"]
    for name in (*SERVICES, *ONE_SHOT):
        env = compose_environment(services[name])
        if "STREAMWISE_DATABASE_URL" in env:
            expected = {"migrate": "pw-from-env", "trainer": "pg-trainer-from-env", "webapp": "pg-webapp-from-env"}[name]
            assert urlsplit(env["STREAMWISE_DATABASE_URL"]).password == expected
        if "STREAMWISE_REDIS_URL" in env:
            assert urlsplit(env["STREAMWISE_REDIS_URL"]).password == f"redis-{name}-from-env"
        assert env["STREAMWISE_SIGNING_KEYS"] == shell["STREAMWISE_SIGNING_KEYS"]
        assert env["STREAMWISE_API_KEYS"] == shell["STREAMWISE_API_KEYS"]
        assert env["STREAMWISE_ENVIRONMENT"] == "production"
    assert compose_environment(services["postgres"])["POSTGRES_PASSWORD"] == "pw-from-env"
    assert "streamwise-dev-" not in compose["configs"]["redis-users"]["content"]
    assert text.count("DEVELOPMENT") >= 3, "development defaults are marked as such"


def test_health_checks_probe_what_the_code_serves(compose: dict) -> None:
    services = compose["services"]
    for name in (*BACKING, *SERVICES):
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["kafka"]["healthcheck"]["test"][1].startswith("/opt/kafka/bin/")
    for name in SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], f"{name}: exec form, python (no curl in the slim image)"
        probe = http_check(test)
        assert probe, f"{name}: not an HTTP probe: {test}"
        host, port, path = probe
        assert (host, port) == ("127.0.0.1", specs()[name].port), name
        assert serves(name, path), f"{name} serves no {path}"


def test_start_order(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            condition = how["condition"]
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}"
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no health check"
    trainer = services["trainer"]["depends_on"]
    assert {"kafka", "redis", "postgres", "migrate", "topics"} <= set(trainer)
    assert {"kafka", "topics"} <= set(services["ingest"]["depends_on"])
    assert {"redis", "kafka"} <= set(services["predictor"]["depends_on"])
    assert {"redis", "postgres", "migrate"} <= set(services["webapp"]["depends_on"])
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"


def test_trainer_cannot_be_scaled_by_accident(compose: dict) -> None:
    """A fixed host port: a second trainer container fails to start instead of writing too."""
    assert compose["services"]["trainer"]["ports"] == ["127.0.0.1:8003:8003"]


def test_ingest_and_predictor_scale_on_a_host_port_range() -> None:
    services = load_compose({"INGEST_PORTS": "8101-8103", "PREDICTOR_PORTS": "8201-8203"})["services"]
    assert services["ingest"]["ports"] == ["127.0.0.1:8101-8103:8001"]
    assert services["predictor"]["ports"] == ["127.0.0.1:8201-8203:8002"]


def test_ports_open_to_the_network_only_when_asked() -> None:
    services = load_compose({"STREAMWISE_PUBLISH_ADDRESS": "0.0.0.0"})["services"]
    assert services["webapp"]["ports"] == ["0.0.0.0:8000:8000"]


def test_demo_profile_command_parses_and_authenticates(compose: dict) -> None:
    demo = compose["services"]["demo"]
    assert demo["profiles"] == ["demo"]
    argv = compose_command(demo)
    assert argv[:3] == ["python", "-m", "streamwise_devstack.demo_stream"]
    command = typer.main.get_command(demo_stream.app)
    ctx = command.make_context("demo_stream", argv[3:])  # raises on an unknown option or a bad value
    assert ctx.params["ingest_url"] == f"http://ingest:{specs()['ingest'].port}"
    assert ctx.params["rate"] == 200
    ingest_keys = compose_environment(compose["services"]["ingest"])["STREAMWISE_API_KEYS"].split(",")
    assert ctx.params["api_key"] in ingest_keys
    assert set(demo["depends_on"]) >= {"ingest"}


def test_one_shot_commands_use_the_code(compose: dict) -> None:
    """The init steps call the functions the trainer calls in ``prepare`` (executed in test_compose_run)."""
    migrate = compose_command(compose["services"]["migrate"])
    topics = compose_command(compose["services"]["topics"])
    assert migrate[:5] == ["python", "-m", "streamwise_devstack.cli", "registry", "migrate"]
    command = typer.main.get_command(registry_cli.registry).commands["migrate"]  # type: ignore[attr-defined]
    ctx = command.make_context("migrate", migrate[5:])  # raises on an unknown option or a bad value
    assert ctx.params["grant"] is True
    assert "--grant" in migrate and _login_variables(compose["services"]["migrate"]) == {
        "POSTGRES_TRAINER_PASSWORD", "POSTGRES_WEBAPP_PASSWORD"}
    assert topics[:2] == ["python", "-c"] and "ensure_app_topics(Settings())" in topics[2]
    compile(topics[2], "<compose>", "exec")


def test_webapp_links_point_at_published_ports(compose: dict) -> None:
    env = compose_environment(compose["services"]["webapp"])
    for key, name in (("STREAMWISE_INGEST_URL", "ingest"), ("STREAMWISE_PREDICTOR_URL", "predictor")):
        published = compose["services"][name]["ports"][0].split(":")[1]
        assert urlsplit(env[key]).port == int(published)
