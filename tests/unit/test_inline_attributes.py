"""Models loaded from a blob, and the trainer's model after a version, keep CPython's inline
attributes (a ``__dict__`` asked for is never undone, and slows every method call on the object)."""

from __future__ import annotations

import gc
import pickle
import random
from pathlib import Path
from typing import Any

from river import proba

from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.appspec import load_app_spec, parse_app_spec
from streamwise_core.contracts.codec import dumps
from streamwise_core.contracts.events import EventReceived, utcnow
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.inference import predict
from streamwise_devstack.fraud import FraudStream
from streamwise_trainer.learning import Record, Trainer

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
SIGNER = Signer({"k1": b"unit-test-signing-key-0123456789"})


class Plain:
    def __init__(self, a: int, b: str) -> None:
        self.a = a
        self.b = b

    def both(self) -> tuple[int, str]:
        return self.a, self.b


class WithSetter:
    def __init__(self) -> None:
        self._v = 0
        self.v = 3
        self.__dict__["v"] = 5  # as river's tree branches fill theirs: beside the property

    @property
    def v(self) -> int:
        return self._v

    @v.setter
    def v(self, value: int) -> None:
        self._v = value * 10


class OwnState:
    def __init__(self) -> None:
        self.a = 1

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, restored=True)


class Slotted(Plain):
    __slots__ = ("c",)  # beside the __dict__ that Plain's instances have

    def __init__(self) -> None:
        super().__init__(1, "one")
        self.c = 3.5


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.children: list[Node] = []
        self.parent: Node | None = None


def has_dict(obj: Any, attribute: str) -> bool:
    """Whether ``obj``'s attributes live in a ``__dict__`` (the garbage collector sees that
    dict, keyed by ``attribute`` among others) rather than inline (it sees the values); asking
    ``vars`` would create one."""
    return any(type(r) is dict and attribute in r for r in gc.get_referents(obj))


def test_plain_objects_load_with_their_attributes_inline() -> None:
    original = Plain(7, "seven")
    assert not has_dict(original, "a")
    copy = pickle.loads(dumps([original, original]))
    assert copy[0] is copy[1] and copy[0].both() == (7, "seven")
    assert not has_dict(copy[0], "a")
    assert has_dict(pickle.loads(pickle.dumps(Plain(1, "x"))), "a")  # what plain pickle does
    assert has_dict(original, "a")  # pickling it asked for its __dict__


def test_classes_that_load_their_own_way_still_do() -> None:
    setter, own = pickle.loads(dumps([WithSetter(), OwnState()]))
    assert setter._v == 30 and vars(setter)["v"] == 5  # the property is not called on load
    assert vars(own) == {"a": 1, "restored": True}
    assert pickle.loads(dumps({"k": [1, 2.5, "s"]})) == {"k": [1, 2.5, "s"]}
    slotted = pickle.loads(dumps(Slotted()))
    assert (slotted.a, slotted.b, slotted.c) == (1, "one", 3.5)  # slots are state too


def test_cycles_load_whole_and_inline() -> None:
    root = Node("root")
    child = Node("child")
    child.parent, root.children = root, [child]
    root.parent = root
    loaded = pickle.loads(dumps(root))
    assert loaded.parent is loaded and loaded.children[0].parent is loaded
    assert loaded.children[0].name == "child" and not has_dict(loaded.children[0], "name")


def test_unseeded_gaussians_share_one_fresh_generator_seeded_ones_keep_theirs() -> None:
    a, b, seeded = proba.Gaussian(), proba.Gaussian(), proba.Gaussian(seed=4)
    for g in (a, b, seeded):
        g.update(1.0)
        g.update(3.0)
    seeded._rng.random()
    expected = seeded._rng.getstate()
    la, lb, ls = pickle.loads(dumps([a, b, seeded]))
    assert la._rng is lb._rng and isinstance(la._rng, random.Random)
    assert ls._rng.getstate() == expected and la.mu == a.mu and lb.sigma == b.sigma
    assert not has_dict(la, "_var")  # a tree's leaf estimators: loaded inline too


def tree_trainer() -> Trainer:
    data = SPEC.model_dump(mode="json")
    data["model"] = {"name": "t", "preprocess": "auto", "steps": [
        {"use": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}},
    ]}
    return Trainer(parse_app_spec(data), Topics.for_app("t", SPEC.name))


def records(trainer: Trainer, n: int) -> list[Record]:
    out = []
    for i, e in enumerate(FraudStream(seed=4).take(n)):
        value = EventReceived(id=e.id, features=e.features, label=e.label, timestamp=utcnow()).to_bytes()
        out.append(Record(trainer.topics.events, 0, i, e.id.encode(), value))
    return out


def test_the_trainer_learns_on_from_each_version_s_copy_exactly_as_without_it() -> None:
    publishing, plain = tree_trainer(), tree_trainer()
    recs = records(plain, 3000)
    for start in range(0, len(recs), 500):
        batch = recs[start:start + 500]
        plain.handle_many(batch)
        publishing.handle_many(batch)
        live = publishing.state.learner.model
        snapshot = publishing.serialise(publishing.next_meta(), SIGNER, checkpoint=start % 1000 == 0)
        publishing.learn_on_from(snapshot)
        assert publishing.state.learner.model is not live
    tree = publishing.state.learner.model["HoeffdingTreeClassifier"]
    assert not has_dict(tree, "grace_period") and not has_dict(tree._root, "stats")
    assert has_dict(live["HoeffdingTreeClassifier"], "grace_period")  # what serialising left the live model with
    assert publishing.state.learned_digest == plain.state.learned_digest
    assert publishing.state.learner.metrics.snapshot() == plain.state.learner.metrics.snapshot()
    probes = [to_model_input(SPEC, e.features) for e in FraudStream(seed=9).take(300)]
    task = plain.spec.task
    assert [predict(publishing.state.learner.model, task, x) for x in probes] == [
        predict(plain.state.learner.model, task, x) for x in probes
    ]
