"""The fault tests' history checker, on hand-made histories that break each property."""

from __future__ import annotations

import hashlib

from tests.e2e.histories import (
    History,
    Observation,
    Request,
    TrainerView,
    check,
    digest_chain,
    first_occurrences,
    max_elapsed,
)


def req(ids: str, status: int | None, started: float = 0.0, elapsed: float = 0.01, client: str = "c1") -> Request:
    return Request(client, tuple(ids.split()), status, started, elapsed)


def view(learned: list[str], examples_seen: int | None = None) -> TrainerView:
    return TrainerView(len(learned) if examples_seen is None else examples_seen, digest_chain(learned))


def good_history() -> History:
    """a b acked at once; c d got a 503 (c was stored anyway), were retried and acked."""
    stored = ["a", "b", "c", "c", "d"]
    learned = first_occurrences(stored)
    return History(
        requests=[req("a b", 202), req("c d", 503, 1.0, 3.0), req("c d", None, 4.5, 10.0), req("c d", 202, 15.0)],
        learned=learned,
        stored=stored,
        trainer=view(learned),
        observations=[Observation("p1", 0.0, 1), Observation("p1", 1.0, 1), Observation("p1", 2.0, 3),
                      Observation("p2", 0.5, 2), Observation("p2", 0.5, 2), Observation("p2", 3.0, 4)],
    )


def test_digest_chain_is_the_trainers() -> None:
    d1 = hashlib.blake2b(b"a", digest_size=16).hexdigest()
    d2 = hashlib.blake2b(f"{d1}b".encode(), digest_size=16).hexdigest()
    assert digest_chain([]) == ""
    assert digest_chain(["a", "b"]) == d2
    assert digest_chain(["b", "a"]) != d2


def test_a_clean_history_passes_and_is_counted() -> None:
    report = check(good_history())
    assert report.ok, report.violations
    assert (report.requests, report.accepted_requests, report.unavailable_requests, report.unanswered_requests) == (4, 2, 1, 1)
    assert (report.ids_sent, report.ids_acknowledged, report.ids_failed, report.ids_never_acknowledged) == (4, 4, 2, 0)
    assert (report.stored_records, report.stored_repeats, report.learned) == (5, 1, 4)
    assert report.lost == [] and report.learned_twice == [] and report.regressions == []
    assert (report.first_version, report.last_version, report.versions_observed) == (1, 4, 4)
    assert report.figures()["lost"] == 0 and report.figures()["learned_twice"] == 0


def test_an_id_that_failed_and_was_never_stored_is_allowed() -> None:
    h = History(requests=[req("a", 202), req("b", 503)], learned=["a"], stored=["a"], trainer=view(["a"]))
    report = check(h)
    assert report.ok, report.violations
    assert report.ids_never_acknowledged == 1


def test_an_acknowledged_id_missing_from_the_topic_is_lost() -> None:
    h = History(requests=[req("a b", 202)], learned=["a"], stored=["a"], trainer=view(["a"]))
    report = check(h)
    assert not report.ok
    assert report.lost == ["b"] and report.acknowledged_not_stored == ["b"]


def test_an_acknowledged_id_stored_but_not_learned_is_lost() -> None:
    h = History(requests=[req("a b", 202)], learned=["a"], stored=["a", "b"], trainer=view(["a"]))
    report = check(h)
    assert not report.ok
    assert report.lost == ["b"] and report.acknowledged_not_stored == []


def test_lost_without_a_topic_read() -> None:
    report = check(History(requests=[req("a b", 202)], learned=["b"]))
    assert report.lost == ["a"] and not report.ok


def test_an_id_learned_twice_in_the_claimed_history() -> None:
    learned = ["a", "b", "a"]
    h = History(requests=[req("a b", 202)], learned=learned, stored=["a", "b", "a"], trainer=view(learned))
    report = check(h)
    assert not report.ok
    assert report.learned_twice == ["a"]
    assert report.figures()["learned_twice"] == 1


def test_a_trainer_that_counted_more_examples_applied_something_twice() -> None:
    # The topic's deduplicated order is a, b; the trainer learned a twice behind our back.
    stored = ["a", "b", "a"]
    h = History(requests=[req("a b", 202)], learned=first_occurrences(stored), stored=stored,
                trainer=TrainerView(3, digest_chain(["a", "b", "a"])))
    report = check(h)
    assert not report.ok
    assert report.extra_applications == 1
    assert any("digest" in v for v in report.violations)


def test_a_trainer_whose_digest_differs_learned_another_history() -> None:
    h = History(requests=[req("a b", 202)], learned=["a", "b"], stored=["a", "b"], trainer=TrainerView(2, digest_chain(["b", "a"])))
    report = check(h)
    assert not report.ok and report.lost == [] and report.learned_twice == []
    assert any("digest" in v for v in report.violations)


def test_a_trainer_behind_the_claim_is_reported() -> None:
    h = History(requests=[req("a b", 202)], learned=["a", "b"], stored=["a", "b"], trainer=TrainerView(1, digest_chain(["a"])))
    assert not check(h).ok


def test_ids_nobody_sent_are_phantoms() -> None:
    h = History(requests=[req("a", 202)], learned=["a", "z"], stored=["a", "z"], trainer=view(["a", "z"]))
    report = check(h)
    assert not report.ok and report.phantoms == ["z"]


def test_a_learned_id_that_is_not_on_the_topic() -> None:
    h = History(requests=[req("a b", 202)], learned=["a", "b"], stored=["a"], trainer=view(["a", "b"]))
    report = check(h)
    assert not report.ok and report.acknowledged_not_stored == ["b"]


def test_a_client_that_sees_an_older_version_after_a_newer_one() -> None:
    h = good_history()
    h.observations.append(Observation("p1", 5.0, 2))
    report = check(h)
    assert not report.ok
    assert len(report.regressions) == 1 and "p1 saw v2" in report.regressions[0]


def test_versions_are_compared_per_client_and_by_time() -> None:
    # p2 saw v9 early, p1 only v2 later: not a regression, each client only goes up.
    obs = [Observation("p2", 0.0, 9), Observation("p1", 1.0, 2), Observation("p1", 2.0, 3)]
    assert check(History(observations=obs)).ok
    # Recorded out of time order, but in time order p1 goes 2 → 3: fine.
    obs = [Observation("p1", 2.0, 3), Observation("p1", 1.0, 2)]
    assert check(History(observations=obs)).ok
    # A drop after a plateau is caught.
    obs = [Observation("p1", t, v) for t, v in [(0, 1), (1, 3), (2, 3), (3, 3), (4, 2)]]
    assert len(check(History(observations=obs)).regressions) == 1


def test_max_elapsed_in_a_window() -> None:
    rs = [req("a", 202, 0.0, 0.1), req("b", 503, 10.0, 3.1), req("c", None, 12.0, 4.0), req("d", 202, 30.0, 9.0)]
    assert max_elapsed(rs, 9.0, 20.0) == 4.0
    assert max_elapsed(rs, 40.0, 50.0) == 0.0


def test_a_rollback_is_a_newer_generation_not_a_regression() -> None:
    from tests.e2e.histories import History, Observation, check

    ok = History(observations=[Observation("c", 1.0, 5, 5), Observation("c", 2.0, 2, 6), Observation("c", 3.0, 7, 7)])
    assert check(ok).ok
    stale = History(observations=[Observation("c", 1.0, 2, 6), Observation("c", 2.0, 5, 5)])
    report = check(stale)
    assert not report.ok and "generation 5" in report.regressions[0]
