"""What each service may do on Redis: the least privilege of its Redis ACL user.

The one source of the services' Redis permissions: the secured test server creates exactly these
users (``streamwise_devstack.redis_secured``), and an operator gives each service's user the rule
``acl_rules(service, prefix, app)`` (``ACL SETUSER <user> on >password <rules>``).

The rules follow from the ``ModelStore`` operations each service calls: ``OPERATIONS`` says which
commands each one sends (those its Lua scripts call included: Redis checks them against the
caller's user too) and which kinds of key it reads or writes; a service's user gets the union over
its operations. Keys a service only reads are granted read-only (``%R~``). The announcement
channel is granted to the services that use it; publishing on it and subscribing to it are
separate commands, so the predictor listens but cannot announce.

The ingest service does not use Redis and has no user. Only the trainer writes blobs, the index of
stored versions, checkpoints and the writer lease, and deletes blobs; the web app (the control
plane) moves pointers, pins versions and changes the champion and the roster; the predictor
only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KeyKind = Literal[
    "version", "versions", "served", "pinned", "pointer", "latest", "checkpoint", "writer", "champion", "roster",
]

KEY_PATTERNS: dict[KeyKind, tuple[str, ...]] = {
    "version": ("model:*:version:*",),  # the signed blob, its metadata and the gate's decision
    "versions": ("model:*:versions",),
    "served": ("model:*:served",),
    "pinned": ("model:*:pinned",),
    "pointer": ("model:*:current", "model:*:current:generation"),
    "latest": ("model:*:latest",),
    "checkpoint": ("trainer:*:checkpoint",),
    "writer": ("trainer:*:writer",),
    "champion": ("champion", "champion:generation"),
    "roster": ("roster",),
}
"""The keys of one application, under ``{prefix}:{app}:`` (``ModelStore``'s key layout)."""

CHANNEL = "announcements"
"""The announcement channel, under ``{prefix}:{app}:`` (``ModelStore.channel``)."""

CONNECTION_COMMANDS = frozenset({"ping", "select"})
"""What every client sends besides its operations: the connection pool's health checks, and the
database the URL names (``AUTH``/``HELLO`` need no permission)."""

_TRANSACTION = frozenset({"multi", "exec", "discard"})
_OPTIMISTIC = _TRANSACTION | {"watch", "unwatch"}


@dataclass(frozen=True)
class Operation:
    """The Redis footprint of one ``ModelStore`` method."""

    commands: frozenset[str]
    reads: frozenset[KeyKind] = frozenset()
    writes: frozenset[KeyKind] = frozenset()
    """Written (and so also read)."""
    publishes: bool = False
    subscribes: bool = False


def _op(commands: set[str] | frozenset[str], reads: set[KeyKind] | None = None, writes: set[KeyKind] | None = None, *,
        publishes: bool = False, subscribes: bool = False) -> Operation:
    return Operation(frozenset(commands), frozenset(reads or ()), frozenset(writes or ()), publishes, subscribes)


_MOVE_POINTER = {"zadd", "set", "incrby"}  # redis-py sends INCR as INCRBY
_PUBLISH_VERSION: set[KeyKind] = {"version", "versions", "checkpoint", "latest", "served", "pointer"}

OPERATIONS: dict[str, Operation] = {
    "champion": _op({"mget"}, {"champion"}),
    "claim_champion": _op(_TRANSACTION | {"set", "setnx", "mget"}, writes={"champion"}),
    "set_champion": _op(_OPTIMISTIC | {"get", "set", "incrby", "publish"}, writes={"champion"}, publishes=True),
    "set_roster": _op({"set"}, writes={"roster"}),
    "roster": _op({"get"}, {"roster"}),
    "claim_writer": _op({"eval", "get", "set"}, writes={"writer"}),
    "release_writer": _op({"eval", "get", "del"}, writes={"writer"}),
    "publish": _op(_TRANSACTION | {"hset"} | _MOVE_POINTER | {"publish"}, writes=_PUBLISH_VERSION, publishes=True),
    "publish_gated": _op(_OPTIMISTIC | {"get", "hget", "hset"} | _MOVE_POINTER | {"publish"},
                         writes=_PUBLISH_VERSION, publishes=True),
    "announce": _op({"publish"}, publishes=True),
    "notify": _op({"publish"}, publishes=True),
    "pointer": _op({"mget"}, {"pointer"}),
    "move_current": _op(_OPTIMISTIC | {"exists", "get"} | _MOVE_POINTER | {"publish"}, {"version"},
                        {"served", "pointer"}, publishes=True),
    "latest_version": _op({"mget"}, {"latest", "pointer"}),
    "load_gate": _op({"hget"}, {"version"}),
    "current_version": _op({"get"}, {"pointer"}),
    "set_current": _op(_TRANSACTION | _MOVE_POINTER | {"publish"}, writes={"served", "pointer"}, publishes=True),
    "load": _op({"hgetall"}, {"version"}),
    "put_raw": _op(_TRANSACTION | {"hset", "zadd"}, writes={"version", "versions"}),
    "pin": _op(_OPTIMISTIC | {"exists", "sadd"}, {"version"}, {"pinned"}),
    "unpin": _op({"srem"}, writes={"pinned"}),
    "pinned": _op({"smembers"}, {"pinned"}),
    "stored_versions": _op({"zrange"}, {"versions"}),
    # SCAN names keys without reading them; the index is then completed.
    "index_versions": _op({"scan", "zadd"}, writes={"versions"}),
    # EVAL declares its keys for writing, the pinned set and the pointer among them.
    "prune": _op({"eval", "get", "smembers", "zrevrange", "zrangebyscore", "zrevrangebyscore", "zrem", "unlink"},
                 writes={"version", "versions", "served", "pinned", "pointer"}),
    "forget_checkpoint": _op({"unlink"}, writes={"checkpoint"}),
    "save_checkpoint": _op({"hset"}, writes={"checkpoint"}),
    "load_checkpoint": _op({"hgetall"}, {"checkpoint"}),
    "announcements": _op({"subscribe"}, subscribes=True),
}
"""Every ``ModelStore`` method that talks to Redis, by name."""

SERVICE_OPERATIONS: dict[str, frozenset[str]] = {
    "trainer": frozenset({
        # start: resume from the checkpoint, index blobs stored before the index, seed the roster
        "load_checkpoint", "latest_version", "load", "load_gate", "index_versions", "champion", "claim_champion",
        "set_roster", "pointer",
        # learning: the writer lease, publications, retention, drift notes, retired challengers
        "claim_writer", "release_writer", "publish", "publish_gated", "announce", "save_checkpoint", "current_version",
        "pinned", "prune", "notify", "forget_checkpoint",
        # a challenger that stays ahead becomes champion
        "set_champion",
    }),
    "predictor": frozenset({"champion", "roster", "pointer", "load", "announcements"}),
    "webapp": frozenset({
        # live view, model and champion pages
        "champion", "current_version", "pointer", "load", "stored_versions", "pinned", "announcements",
        # operators: promote and roll back, pin, change the champion, add and retire challengers
        "move_current", "pin", "unpin", "set_champion", "set_roster",
    }),
}
"""The services with a Redis user, and what they do with it; the ingest service has none."""


@dataclass(frozen=True)
class RedisAccess:
    commands: frozenset[str]
    reads: frozenset[KeyKind]
    """Only read (granted read-only)."""
    writes: frozenset[KeyKind]
    publishes: bool
    subscribes: bool


def service_access(service: str) -> RedisAccess:
    """What ``service`` does on Redis (``KeyError`` for a service without a Redis user)."""
    operations = [OPERATIONS[name] for name in SERVICE_OPERATIONS[service]]
    writes = frozenset(k for op in operations for k in op.writes)
    return RedisAccess(
        commands=CONNECTION_COMMANDS.union(*(op.commands for op in operations)),
        reads=frozenset(k for op in operations for k in op.reads) - writes,
        writes=writes,
        publishes=any(op.publishes for op in operations),
        subscribes=any(op.subscribes for op in operations),
    )


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def acl_rules(service: str, prefix: str, app: str) -> str:
    """The ACL rules of ``service``'s user for one application (keys under ``{prefix}:{app}:``),
    for ``ACL SETUSER``: they start from nothing (``resetkeys resetchannels -@all``), so setting
    them again replaces them."""
    access = service_access(service)
    base = _glob_escape(f"{prefix}:{app}")
    rules = ["resetkeys", "resetchannels", "-@all", *(f"+{c}" for c in sorted(access.commands))]
    rules += [f"%R~{base}:{p}" for kind in sorted(access.reads) for p in KEY_PATTERNS[kind]]
    rules += [f"~{base}:{p}" for kind in sorted(access.writes) for p in KEY_PATTERNS[kind]]
    if access.publishes or access.subscribes:
        rules.append(f"&{base}:{CHANNEL}")
    return " ".join(rules)
