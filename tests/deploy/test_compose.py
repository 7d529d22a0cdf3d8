"""docker-compose.yml: valid against the Compose specification, and consistent with the code."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import typer.main
import yaml

from streamwise_devstack import demo_stream

from .support import (
    ROOT,
    COMPOSE_FILE,
    IMAGE_APP_SPEC,
    SERVICES,
    SETTINGS_CLASSES,
    compose_command,
    compose_environment,
    container_port,
    http_check,
    interpolate,
    load_compose,
    settings_env_names,
    serves,
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


@pytest.mark.parametrize("name", [*SERVICES, *ONE_SHOT])
def test_every_variable_is_a_setting_of_that_service(compose: dict, name: str) -> None:
    env = compose_environment(compose["services"][name])
    valid = settings_env_names(SETTINGS_CLASSES[name])
    unknown = sorted(set(env) - valid)
    assert not unknown, f"{name}: not settings of {SETTINGS_CLASSES[name].__name__}: {unknown}"


@pytest.mark.parametrize("name", [*SERVICES, *ONE_SHOT])
def test_environment_reaches_the_backing_services(compose: dict, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = compose_environment(compose["services"][name])
    postgres = compose_environment(compose["services"]["postgres"])
    assert env["STREAMWISE_KAFKA__BOOTSTRAP"] == "kafka:9092"
    assert env["STREAMWISE_KAFKA__IDEMPOTENCE"] == "true"
    assert env["STREAMWISE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["STREAMWISE_APP_SPEC"] == IMAGE_APP_SPEC
    db = urlsplit(env["STREAMWISE_DATABASE_URL"])
    assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql+psycopg", "postgres", 5432, "/streamwise")
    assert (db.username, db.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    # The service's settings accept exactly this environment (the app spec path is the image's).
    settings = settings_from_env(monkeypatch, SETTINGS_CLASSES[name], env)
    assert str(settings.app_spec) == IMAGE_APP_SPEC
    assert settings.kafka.bootstrap == "kafka:9092" and settings.kafka.idempotence is True


def test_secrets_come_from_the_environment_with_marked_dev_defaults() -> None:
    text = COMPOSE_FILE.read_text()
    shell = {"POSTGRES_PASSWORD": "pw-from-env", "STREAMWISE_SIGNING_KEYS": "k1:0123456789abcdef0123",
             "STREAMWISE_API_KEYS": "key-from-env", "STREAMWISE_ENVIRONMENT": "production"}
    services = load_compose(shell)["services"]
    for name in (*SERVICES, *ONE_SHOT):
        env = compose_environment(services[name])
        assert urlsplit(env["STREAMWISE_DATABASE_URL"]).password == "pw-from-env"
        assert env["STREAMWISE_SIGNING_KEYS"] == shell["STREAMWISE_SIGNING_KEYS"]
        assert env["STREAMWISE_API_KEYS"] == shell["STREAMWISE_API_KEYS"]
        assert env["STREAMWISE_ENVIRONMENT"] == "production"
    assert compose_environment(services["postgres"])["POSTGRES_PASSWORD"] == "pw-from-env"
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
    assert migrate[:2] == ["python", "-c"] and "streamwise_core.registry import migrate" in migrate[2]
    assert topics[:2] == ["python", "-c"] and "ensure_app_topics(Settings())" in topics[2]
    for code in (migrate[2], topics[2]):
        compile(code, "<compose>", "exec")


def test_webapp_links_point_at_published_ports(compose: dict) -> None:
    env = compose_environment(compose["services"]["webapp"])
    for key, name in (("STREAMWISE_INGEST_URL", "ingest"), ("STREAMWISE_PREDICTOR_URL", "predictor")):
        published = compose["services"][name]["ports"][0].split(":")[1]
        assert urlsplit(env[key]).port == int(published)
