"""The predictor's model loader: the same model as ``pickle.loads``, the same refusals as
``codec.unpack`` (before anything is unpickled), the collector left as it was found, pacing."""

from __future__ import annotations

import gc
import io
import pickle
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamwise_core.contracts.appspec import StepSpec, load_app_spec
from streamwise_core.contracts.codec import ModelMeta, pack, verify
from streamwise_core.contracts.errors import BlobRefused
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream
from streamwise_predictor import loading
from streamwise_predictor.loading import FrameReader, LoadPolicy, ModelLoader, Pacer, gentle_loads, gentle_release

from .tampering import REFUSALS, tampered
from .trainer_support import FakeClock

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
KEY = b"loader-test-signing-key-0123456789"
SIGNER = Signer({"k1": KEY})

#: Every time an ``Exploding`` object is unpickled, this list grows.
UNPICKLED: list[str] = []
#: The collector's thresholds each time a ``ThresholdProbe`` is unpickled.
THRESHOLDS_SEEN: list[tuple[int, int, int]] = []


def record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


def fail_unpickling(tag: str) -> str:
    raise RuntimeError(f"unpickling {tag} failed")


class Exploding:
    """An object whose unpickling has an observable side effect (or fails, ``fail=True``)."""

    def __init__(self, tag: str, fail: bool = False) -> None:
        self.tag = tag
        self.fail = fail

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (fail_unpickling if self.fail else record_unpickling), (self.tag,)


def record_thresholds() -> str:
    THRESHOLDS_SEEN.append(gc.get_threshold())
    return "probe"


class ThresholdProbe:
    """Unpickled in the middle of a model: says what the collector's thresholds were then."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return record_thresholds, ()


class Cyclic:
    """A 'model' that holds a reference cycle: reference counting alone never frees it."""

    def __init__(self) -> None:
        self.me = self


def meta(version: int = 3, **update: Any) -> ModelMeta:
    return ModelMeta(app="fraud", model="fraud-lr", version=version, task="binary", examples_seen=42, **update)


def wait_until(done: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``done`` until it is true; fail naming ``what`` after ``timeout_s`` (a hang guard, not a speed bound)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} within {timeout_s:.0f} s")
        time.sleep(0.01)


def trained(spec_model: Any = None, n: int = 400) -> Any:
    model = build_model(SPEC, spec_model)
    for g in FraudStream(seed=41, drift_at=10**9).take(n):
        model.learn_one(to_model_input(SPEC, g.features), g.label)
    return model


@pytest.fixture(autouse=True)
def _clean_gc() -> Iterator[None]:
    """Each test starts and ends with nothing frozen and the default thresholds."""
    UNPICKLED.clear()
    THRESHOLDS_SEEN.clear()
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.fixture(scope="module")
def fraud_model() -> Any:
    return trained()


# --- the same object as pickle.loads -----------------------------------------------------------


def test_gentle_loads_gives_what_pickle_loads_gives(fraud_model: Any) -> None:
    blob = pickle.dumps(fraud_model, protocol=pickle.HIGHEST_PROTOCOL)
    plain, gentle = pickle.loads(blob), gentle_loads(blob)  # noqa: S301 - our own bytes
    assert type(gentle) is type(plain)
    assert pickle.dumps(gentle, protocol=5) == pickle.dumps(plain, protocol=5)
    for g in FraudStream(seed=42, drift_at=10**9).take(50):
        x = to_model_input(SPEC, g.features)
        assert gentle.predict_proba_one(x) == plain.predict_proba_one(x)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_and_out_of_frame_bytes(protocol: int) -> None:
    """Protocols 0-3 read lines; a bytes object larger than a frame is read with readinto."""
    shared = [1.5, "x"]
    obj = {"big": bytes(range(256)) * 2000, "text": "é" * 10, "n": [2**70, -3, 0.25], "shared": (shared, shared),
           "set": {1, 2}, "none": None, "nested": {"a": [{"b": bytearray(b"xy")}]}}
    blob = pickle.dumps(obj, protocol=protocol)
    got = gentle_loads(blob, batch=2)
    assert got == obj
    assert got["shared"][0] is got["shared"][1]


def test_frame_reader_is_a_file() -> None:
    data = b"line one\nline two\nrest"
    reader = FrameReader(data)
    assert reader.readline() == b"line one\n"
    buf = bytearray(4)
    assert reader.readinto(buf) == 4 and bytes(buf) == b"line"
    assert reader.read(5) == b" two\n"
    assert reader.readline() == b"rest"
    assert reader.read() == b"" and reader.readinto(buf) == 0
    assert io.BytesIO(data).read() == FrameReader(data).read(-1)


def test_load_returns_the_verified_meta_and_the_model(fraud_model: Any) -> None:
    signed = pack(fraud_model, meta(), SIGNER)
    got_meta, model = ModelLoader(LoadPolicy(cpu_share=0.5)).load(signed, SIGNER)
    assert got_meta == verify(signed, SIGNER)
    plain = pickle.loads(signed.blob)  # noqa: S301 - our own bytes
    assert pickle.dumps(model, protocol=5) == pickle.dumps(plain, protocol=5)


# --- refusals, before anything is unpickled --------------------------------------------------


@pytest.mark.parametrize("how", REFUSALS)
def test_a_refused_blob_is_never_unpickled(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    signed, signer = tampered(how, Exploding(how), meta, SIGNER, Signer({"k2": b"another-key-the-blob-was-not-signed-with"}))

    def no_unpickler(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an unpickler was made for a refused blob")

    monkeypatch.setattr(loading.pickle, "Unpickler", no_unpickler)
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    with pytest.raises(BlobRefused):
        ModelLoader().load(signed, signer)
    assert UNPICKLED == []
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, frozen)


def test_a_valid_blob_is_unpickled_once() -> None:
    signed = pack(Exploding("valid"), meta(), SIGNER)
    _, obj = ModelLoader().load(signed, SIGNER)
    assert obj == "valid" and UNPICKLED == ["valid"]


# --- the collector -------------------------------------------------------------------------------


def test_no_full_collection_during_the_load_then_everything_frozen(fraud_model: Any) -> None:
    thresholds = gc.get_threshold()
    signed = pack({"model": fraud_model, "probe": ThresholdProbe()}, meta(), SIGNER)
    _, model = ModelLoader().load(signed, SIGNER)
    [seen] = THRESHOLDS_SEEN
    assert seen[:2] == thresholds[:2] and seen[2] >= 1 << 30  # full collections held back while unpickling
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() > 0
    assert not any(obj is model["model"] for obj in gc.get_objects())  # frozen: no collection walks it


@pytest.mark.parametrize("freeze", [True, False])
def test_collector_state_is_restored_when_unpickling_fails(freeze: bool) -> None:
    thresholds, enabled, frozen = gc.get_threshold(), gc.isenabled(), gc.get_freeze_count()
    signed = pack([1, 2, Exploding("broken", fail=True)], meta(), SIGNER)
    with pytest.raises(RuntimeError, match="unpickling broken failed"):
        ModelLoader(LoadPolicy(gc_freeze=freeze, cpu_share=0.5)).load(signed, SIGNER)
    assert (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count()) == (thresholds, enabled, frozen)


def test_without_gc_freeze_nothing_is_frozen_nor_held_back(fraud_model: Any) -> None:
    thresholds = gc.get_threshold()
    ModelLoader(LoadPolicy(gc_freeze=False)).load(pack([fraud_model, ThresholdProbe()], meta(), SIGNER), SIGNER)
    assert [thresholds] == THRESHOLDS_SEEN and gc.get_freeze_count() == 0


@pytest.mark.parametrize("step", [
    None,  # the demo app's own model
    {"use": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}},
    {"use": "ensemble.BaggingClassifier", "params": {
        "model": {"use": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50, "leaf_prediction": "mc"}},
        "n_models": 3, "seed": 7}},
    {"use": "forest.ARFClassifier", "params": {"n_models": 3, "seed": 7}},
    {"use": "naive_bayes.GaussianNB"},
], ids=["demo", "hoeffding-tree", "bagging", "arf", "gaussian-nb"])
def test_models_hold_no_reference_cycles(step: dict[str, Any] | None) -> None:
    """``gc.freeze()`` after a load is safe only because a replaced model is freed by reference
    counting alone: a model with a cycle would stay frozen forever (``ModelLoader`` notices and
    stops freezing, but at the price of one full collection)."""
    spec_model = None if step is None else SPEC.model.model_copy(update={"steps": (StepSpec.model_validate(step),)})
    model = pickle.loads(pickle.dumps(trained(spec_model, n=600)))  # noqa: S301 - our own bytes
    gc.collect()
    del model
    assert gc.collect() == 0


def test_a_replaced_model_kept_alive_by_a_cycle_stops_the_freezing() -> None:
    clock = FakeClock()
    loader = ModelLoader(clock=clock)
    _, first = loader.load(pack(Cyclic(), meta(1), SIGNER), SIGNER)
    assert gc.get_freeze_count() > 0
    loader.retired(first)
    del first  # the cycle keeps it alive, frozen
    clock.advance(loading.LEAK_GRACE_S + 1)
    _, second = loader.load(pack({"acyclic": 2}, meta(2), SIGNER), SIGNER)
    assert loader.freezing is False
    assert gc.get_freeze_count() == 0  # everything handed back to the collector
    assert second == {"acyclic": 2}


def test_a_replaced_model_freed_in_time_keeps_the_freezing(fraud_model: Any) -> None:
    clock = FakeClock()
    loader = ModelLoader(clock=clock)
    _, first = loader.load(pack(fraud_model, meta(1), SIGNER), SIGNER)
    probe = weakref.ref(first)
    loader.retired(first)
    del first
    wait_until(lambda: probe() is None, "the release thread frees the replaced model")  # in time: the clock stood still
    clock.advance(loading.LEAK_GRACE_S + 1)  # the next load comes after the grace time: a freed model is forgotten
    loader.load(pack(fraud_model, meta(2), SIGNER), SIGNER)
    assert loader.freezing is True and loader._retired == []  # noqa: SLF001


def test_a_sweep_reclaims_cyclic_garbage_frozen_since_the_last_one() -> None:
    clock = FakeClock()
    loader = ModelLoader(LoadPolicy(sweep_s=3600), clock=clock)
    loader.load(pack({"v": 1}, meta(1), SIGNER), SIGNER)
    garbage = Cyclic()
    probe = weakref.ref(garbage)
    loader.load(pack({"v": 2}, meta(2), SIGNER), SIGNER)  # freezes the (still alive) object
    del garbage
    gc.collect()
    assert probe() is not None  # frozen: no collection sees it
    loader.load(pack({"v": 3}, meta(3), SIGNER), SIGNER)
    assert probe() is not None  # no sweep yet
    clock.advance(3600)
    loader.load(pack({"v": 4}, meta(4), SIGNER), SIGNER)
    assert probe() is None
    assert loader.freezing is True and gc.get_freeze_count() > 0


# --- releasing a replaced model --------------------------------------------------------------------


def test_gentle_release_frees_the_whole_model_in_pieces(fraud_model: Any) -> None:
    model = pickle.loads(pickle.dumps(fraud_model))  # noqa: S301 - our own bytes
    probes = [weakref.ref(model), weakref.ref(model.steps[next(reversed(model.steps))])]
    box = [model]
    del model
    assert gentle_release(box, limit=10) is True
    assert box == [] and [p() for p in probes] == [None, None]


def test_gentle_release_waits_for_requests_then_gives_up(fraud_model: Any) -> None:
    model = pickle.loads(pickle.dumps(fraud_model))  # noqa: S301 - our own bytes
    before = pickle.dumps(model)
    started = time.monotonic()
    assert gentle_release([model], wait_s=0.1, poll_s=0.01) is False  # a "request" still holds it
    assert time.monotonic() - started >= 0.1
    assert pickle.dumps(model) == before  # untouched


def test_retired_models_are_released_by_a_background_thread(fraud_model: Any) -> None:
    loader = ModelLoader()
    _, model = loader.load(pack(fraud_model, meta(1), SIGNER), SIGNER)
    probe = weakref.ref(model)
    in_flight = model  # a request still predicting with it
    loader.retired(model)
    del model
    time.sleep(0.1)
    assert probe() is in_flight
    del in_flight
    wait_until(lambda: probe() is None, "the release thread frees the model once the request lets go of it")


# --- pacing ----------------------------------------------------------------------------------------


def test_pacer_keeps_the_cpu_share() -> None:
    pace = Pacer(share=0.25, slice_s=0.002)
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    while time.thread_time() - cpu0 < 0.05:
        sum(range(2000))
        pace()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    assert pace.paused_s >= 2.5 * (cpu - 0.003)  # 3 s of pause per s of work, up to one slice
    assert wall >= 3 * cpu


def test_full_share_never_pauses() -> None:
    pace = Pacer(share=1.0)
    cpu0 = time.thread_time()
    while time.thread_time() - cpu0 < 0.01:
        pace()
    assert pace.paused_s == 0


def test_a_small_model_is_not_paused(fraud_model: Any) -> None:
    loader = ModelLoader(LoadPolicy(cpu_share=0.1, slice_s=0.05))
    loader.load(pack(fraud_model, meta(), SIGNER), SIGNER)
    assert loader.last["paused"] == 0
    assert set(loader.last) == {"total", "verify", "unpickle", "paused", "gc"}


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_policy_refuses_a_share_outside_0_1(share: float) -> None:
    with pytest.raises(ValueError, match="cpu_share"):
        LoadPolicy(cpu_share=share)


def test_settings_feed_the_policy() -> None:
    from streamwise_predictor.settings import PredictorSettings

    settings = PredictorSettings(swap_load_cpu_share=0.5, swap_gc_freeze=False)
    assert (settings.swap_load_cpu_share, settings.swap_gc_freeze) == (0.5, False)
    assert 0 < PredictorSettings().swap_load_cpu_share <= 1
    with pytest.raises(ValueError):
        PredictorSettings(swap_load_cpu_share=0)
