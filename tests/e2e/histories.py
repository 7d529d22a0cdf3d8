"""A pure checker over what clients and the trainer recorded during a fault test (no I/O).

A history holds, per HTTP request to ingest, the ids it carried and how it was answered
(202, 503, another status, or no answer at all), the ids stored on the events topic in
topic order, the ids the trainer learned in its order (verified against the trainer's
``learned_digest`` hash chain), and the model versions each predictor client observed over
time. ``check`` says whether

- no acknowledged event was lost: every id answered 202 was stored and learned;
- none was applied twice: each id was learned at most once, and the trainer's own count and
  digest agree with that history;
- nothing came from nowhere: every id stored or learned was sent by a client;
- no client saw the served version go back after it had seen a newer one: newer means a newer
  pointer generation (a rollback is a new generation, so its lower version is no regression),
  or a higher version within one generation;

and counts everything for the test to print.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

ACCEPTED = 202


def digest_chain(ids: Iterable[str], start: str = "") -> str:
    """The trainer's ``learned_digest`` after learning ``ids`` in this order."""
    digest = start
    for event_id in ids:
        digest = hashlib.blake2b(f"{digest}{event_id}".encode(), digest_size=16).hexdigest()
    return digest


def first_occurrences(ids: Iterable[str]) -> list[str]:
    """``ids`` in order without repeats: what a trainer that ignores redeliveries learns."""
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Request:
    """One POST to ingest: which client, which ids, the status (None: no answer), when."""

    client: str
    ids: tuple[str, ...]
    status: int | None
    started: float
    elapsed: float

    @property
    def acknowledged(self) -> bool:
        return self.status == ACCEPTED


@dataclass(frozen=True)
class Observation:
    """A predictor client saw ``version`` being served at time ``at`` (under ``generation`` of
    the current pointer, when the client knows it; 0 otherwise)."""

    client: str
    at: float
    version: int
    generation: int = 0

    @property
    def rank(self) -> tuple[int, int]:
        return (self.generation, self.version)


@dataclass(frozen=True)
class TrainerView:
    """What the trainer says about itself (GET /v1/status)."""

    examples_seen: int
    learned_digest: str
    duplicates_ignored: int = 0


@dataclass
class History:
    requests: list[Request] = field(default_factory=list)
    learned: list[str] = field(default_factory=list)
    """Ids in the order the trainer learned them (a claim that ``trainer`` verifies)."""
    stored: list[str] | None = None
    """Ids on the events topic in topic order, repeats included; None when not read."""
    trainer: TrainerView | None = None
    observations: list[Observation] = field(default_factory=list)


@dataclass
class Report:
    requests: int = 0
    accepted_requests: int = 0
    unavailable_requests: int = 0
    """Answered 503."""
    other_status_requests: int = 0
    unanswered_requests: int = 0
    """Timed out or the connection failed."""
    ids_sent: int = 0
    ids_acknowledged: int = 0
    ids_failed: int = 0
    """Distinct ids that got at least one answer other than 202."""
    ids_never_acknowledged: int = 0
    stored_records: int = 0
    stored_repeats: int = 0
    """Records on the topic whose id was stored before (a retried request); allowed."""
    learned: int = 0
    lost: list[str] = field(default_factory=list)
    """Acknowledged but not learned (or not even stored)."""
    acknowledged_not_stored: list[str] = field(default_factory=list)
    learned_twice: list[str] = field(default_factory=list)
    extra_applications: int = 0
    """How many more examples the trainer counted than the learned history holds."""
    phantoms: list[str] = field(default_factory=list)
    """Stored or learned ids that no client ever sent."""
    regressions: list[str] = field(default_factory=list)
    versions_observed: int = 0
    first_version: int | None = None
    last_version: int | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def figures(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "202": self.accepted_requests,
            "503": self.unavailable_requests,
            "other_status": self.other_status_requests,
            "unanswered": self.unanswered_requests,
            "ids_sent": self.ids_sent,
            "ids_acknowledged": self.ids_acknowledged,
            "ids_failed_at_least_once": self.ids_failed,
            "stored_records": self.stored_records,
            "stored_repeats": self.stored_repeats,
            "learned": self.learned,
            "lost": len(self.lost),
            "learned_twice": len(self.learned_twice) + self.extra_applications,
            "versions": (self.first_version, self.last_version, self.versions_observed),
        }


def _sample(ids: Iterable[str], n: int = 5) -> str:
    items = sorted(ids)
    more = f" … (+{len(items) - n})" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check(history: History) -> Report:
    report = Report()
    sent: set[str] = set()
    acked: set[str] = set()
    failed: set[str] = set()
    for r in history.requests:
        report.requests += 1
        sent.update(r.ids)
        if r.status == ACCEPTED:
            report.accepted_requests += 1
            acked.update(r.ids)
        else:
            failed.update(r.ids)
            if r.status is None:
                report.unanswered_requests += 1
            elif r.status == 503:
                report.unavailable_requests += 1
            else:
                report.other_status_requests += 1
    report.ids_sent, report.ids_acknowledged, report.ids_failed = len(sent), len(acked), len(failed)
    report.ids_never_acknowledged = len(sent - acked)

    learned_counts = Counter(history.learned)
    learned = set(learned_counts)
    report.learned = len(history.learned)
    report.learned_twice = sorted(i for i, n in learned_counts.items() if n > 1)
    if report.learned_twice:
        report.violations.append(f"{len(report.learned_twice)} id(s) learned twice: {_sample(report.learned_twice)}")

    if history.trainer is not None:
        t = history.trainer
        if t.examples_seen > len(history.learned):
            report.extra_applications = t.examples_seen - len(history.learned)
            report.violations.append(
                f"the trainer counts {t.examples_seen} examples but {len(history.learned)} were learned:"
                f" {report.extra_applications} applied more than once (or from nowhere)"
            )
        elif t.examples_seen < len(history.learned):
            report.violations.append(
                f"the trainer counts {t.examples_seen} examples, fewer than the {len(history.learned)} claimed learned"
            )
        if digest_chain(history.learned) != t.learned_digest:
            report.violations.append("the trainer's learned_digest differs from the learned history (order, repeats or ids)")

    if history.stored is not None:
        stored_counts = Counter(history.stored)
        report.stored_records = len(history.stored)
        report.stored_repeats = report.stored_records - len(stored_counts)
        report.acknowledged_not_stored = sorted(acked - set(stored_counts))
        if report.acknowledged_not_stored:
            report.violations.append(
                f"{len(report.acknowledged_not_stored)} acknowledged id(s) not on the topic:"
                f" {_sample(report.acknowledged_not_stored)}"
            )
        if learned - set(stored_counts):
            report.violations.append(f"learned ids never stored: {_sample(learned - set(stored_counts))}")
        report.phantoms = sorted((set(stored_counts) | learned) - sent)
    else:
        report.phantoms = sorted(learned - sent)
    if report.phantoms:
        report.violations.append(f"{len(report.phantoms)} id(s) no client sent: {_sample(report.phantoms)}")

    report.lost = sorted(acked - learned)
    if report.lost:
        report.violations.append(f"{len(report.lost)} acknowledged id(s) never learned: {_sample(report.lost)}")

    by_client: dict[str, list[Observation]] = {}
    for o in history.observations:
        by_client.setdefault(o.client, []).append(o)
    for client, seen in sorted(by_client.items()):
        highest: Observation | None = None
        for o in sorted(seen, key=lambda o: o.at):  # stable: equal times keep recording order
            if highest is not None and o.rank < highest.rank:
                report.regressions.append(
                    f"{client} saw v{o.version} (generation {o.generation}) at {o.at:.3f}"
                    f" after v{highest.version} (generation {highest.generation}) at {highest.at:.3f}"
                )
            if highest is None or o.rank > highest.rank:
                highest = o
    if report.regressions:
        report.violations.append(f"served version went back {len(report.regressions)} time(s): {report.regressions[:3]}")
    versions = [o.version for o in history.observations]
    report.versions_observed = len(set(versions))
    report.first_version = min(versions) if versions else None
    report.last_version = max(versions) if versions else None
    return report


def max_elapsed(requests: Sequence[Request], start: float, end: float) -> float:
    """The longest time to an answer (or to giving up) of requests started in ``[start, end]``."""
    return max((r.elapsed for r in requests if start <= r.started <= end), default=0.0)
