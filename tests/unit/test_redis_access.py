"""Each service's Redis rights (``redis_access``): the ACL rules and how they follow ``ModelStore``'s
key layout and operations; the real server side is tests/integration/test_redis_security.py."""

from __future__ import annotations

import inspect
from fnmatch import fnmatchcase

import pytest

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.redis_access import (
    CHANNEL,
    KEY_PATTERNS,
    OPERATIONS,
    SERVICE_OPERATIONS,
    KeyKind,
    acl_rules,
    service_access,
)

PREFIX, APP = "streamwise", "fraud"
READ_ONLY_COMMANDS = {"get", "mget", "hget", "hgetall", "exists", "smembers", "zrange", "ping", "select", "subscribe"}


def _store_keys() -> dict[str, KeyKind]:
    """Every key ``ModelStore`` uses (for a model and a version), with its kind."""
    store = ModelStore(None, PREFIX, APP)  # type: ignore[arg-type]  # the key layout needs no client
    return {
        store._version_key("m", 7): "version", store._versions_key("m"): "versions", store._served_key("m"): "served",
        store._pinned_key("m"): "pinned", store._current_key("m"): "pointer", store._generation_key("m"): "pointer",
        store._latest_key("m"): "latest", store._checkpoint_key("m"): "checkpoint", store._writer_key("m"): "writer",
        store._champion_key: "champion", f"{store._champion_key}:generation": "champion", store._roster_key: "roster",
    }


def _patterns(rules: str) -> tuple[set[str], set[str]]:
    """The read-only and the read-write key patterns of a rule string."""
    words = rules.split()
    return ({w[3:] for w in words if w.startswith("%R~")}, {w[1:] for w in words if w.startswith("~")})


def _commands(rules: str) -> set[str]:
    return {w[1:] for w in rules.split() if w.startswith("+")}


def _writable(service: str) -> set[KeyKind]:
    _, read_write = _patterns(acl_rules(service, PREFIX, APP))
    return {kind for key, kind in _store_keys().items() if any(fnmatchcase(key, p) for p in read_write)}


def _readable(service: str) -> set[KeyKind]:
    read_only, read_write = _patterns(acl_rules(service, PREFIX, APP))
    return {kind for key, kind in _store_keys().items() if any(fnmatchcase(key, p) for p in read_only | read_write)}


def test_the_patterns_follow_the_store_key_layout_one_kind_each() -> None:
    for key, kind in _store_keys().items():
        matching = {k for k, patterns in KEY_PATTERNS.items() for p in patterns if fnmatchcase(key, f"{PREFIX}:{APP}:{p}")}
        assert matching == {kind}, f"{key} matches the patterns of {matching}"
    assert ModelStore(None, PREFIX, APP).channel == f"{PREFIX}:{APP}:{CHANNEL}"  # type: ignore[arg-type]


def test_every_store_operation_has_its_footprint() -> None:
    """A new ``ModelStore`` method must say what it does on Redis before a service can use it."""
    methods = {name for name, fn in inspect.getmembers(ModelStore)
               if not name.startswith("_") and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn))}
    assert methods - {"close"} == set(OPERATIONS)
    for service, operations in SERVICE_OPERATIONS.items():
        assert operations <= set(OPERATIONS), service


def test_ingest_has_no_redis_user() -> None:
    assert set(SERVICE_OPERATIONS) == {"trainer", "predictor", "webapp"}
    with pytest.raises(KeyError):
        acl_rules("ingest", PREFIX, APP)


def test_only_the_trainer_writes_blobs_checkpoints_the_index_and_the_lease() -> None:
    trainer_only: set[KeyKind] = {"version", "versions", "latest", "checkpoint", "writer"}
    assert trainer_only <= _writable("trainer")
    for service in ("predictor", "webapp"):
        assert not _writable(service) & trainer_only, service
    assert {"hset", "eval", "unlink", "del", "scan"} <= _commands(acl_rules("trainer", PREFIX, APP))
    assert not {"hset", "eval", "unlink", "del", "scan"} & _commands(acl_rules("webapp", PREFIX, APP))


def test_the_predictor_only_reads_what_it_serves() -> None:
    rules = acl_rules("predictor", PREFIX, APP)
    assert _writable("predictor") == set()
    assert _readable("predictor") == {"version", "pointer", "champion", "roster"}
    assert _commands(rules) <= READ_ONLY_COMMANDS
    assert "subscribe" in _commands(rules) and "publish" not in _commands(rules)


def test_the_web_app_moves_pointers_pins_and_sets_the_champion() -> None:
    assert _writable("webapp") == {"pointer", "served", "pinned", "champion", "roster"}
    assert _readable("webapp") - _writable("webapp") == {"version", "versions"}
    assert {"publish", "subscribe"} <= _commands(acl_rules("webapp", PREFIX, APP))


def test_rules_replace_what_a_user_had_and_stay_in_the_application() -> None:
    for service in SERVICE_OPERATIONS:
        rules = acl_rules(service, PREFIX, APP)
        assert rules.split()[:3] == ["resetkeys", "resetchannels", "-@all"]
        assert not any(w.startswith("+@") for w in rules.split()), "commands one by one, no category"
        read_only, read_write = _patterns(rules)
        assert all(p.startswith(f"{PREFIX}:{APP}:") for p in read_only | read_write)
        assert [w for w in rules.split() if w.startswith("&")] == [f"&{PREFIX}:{APP}:{CHANNEL}"]
        assert not read_only & read_write
        assert rules == acl_rules(service, PREFIX, APP)
    assert not any(fnmatchcase(f"other:{APP}:roster", p) for p in _patterns(acl_rules("trainer", PREFIX, APP))[1])


def test_glob_characters_of_a_prefix_are_literal() -> None:
    assert "~a\\*b:app:roster" in acl_rules("trainer", "a*b", "app").split()


def test_what_a_service_only_reads_is_not_also_written() -> None:
    for service in SERVICE_OPERATIONS:
        access = service_access(service)
        assert not access.reads & access.writes
        assert {"ping", "select"} <= access.commands
