"""HMAC signing with key rotation, and signed model blobs that are verified before unpickling."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from typing import Any

import pytest
import river
from pydantic import SecretStr

from streamwise_core.adapters.settings import DEV_SIGNING_KEY, Settings
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack, unpack, verify
from streamwise_core.contracts.errors import BlobRefused
from streamwise_core.contracts.signing import Signature, Signer

from .tampering import REFUSALS, tampered

OLD = b"old-secret-0123456789abcdef"
NEW = b"new-secret-fedcba9876543210"

#: Every time an ``Exploding`` object is unpickled, this list grows.
UNPICKLED: list[str] = []


def record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Exploding:
    """An object whose unpickling has an observable side effect."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return record_unpickling, (self.tag,)


def make_meta(**update: Any) -> ModelMeta:
    fields: dict[str, Any] = {"app": "fraud", "model": "fraud-lr", "version": 3, "task": "binary", "examples_seen": 42}
    fields.update(update)
    return ModelMeta(**fields)


def flip(data: bytes, index: int = -1) -> bytes:
    raw = bytearray(data)
    raw[index] ^= 0x01
    return bytes(raw)


@pytest.fixture(autouse=True)
def _clear_unpickled() -> None:
    UNPICKLED.clear()


# --- Signer ------------------------------------------------------------------------------


def test_signer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one signing key"):
        Signer({})


def test_sign_verify_round_trip() -> None:
    signer = Signer({"k1": OLD})
    sig = signer.sign(b"meta", b"blob")
    assert sig.key_id == "k1"
    assert len(sig.digest) == 64 and int(sig.digest, 16) >= 0
    assert signer.verify(sig, b"meta", b"blob") is None
    # Deterministic: the same parts and key give the same digest.
    assert Signer({"k1": OLD}).sign(b"meta", b"blob") == sig


def test_other_parts_are_refused() -> None:
    signer = Signer({"k1": OLD})
    sig = signer.sign(b"meta", b"blob")
    for parts in [(b"meta", b"blob!"), (b"Meta", b"blob"), (b"meta",), (b"meta", b"blob", b"")]:
        with pytest.raises(BlobRefused, match="bad signature"):
            signer.verify(sig, *parts)


def test_parts_are_length_prefixed() -> None:
    signer = Signer({"k1": OLD})
    sig = signer.sign(b"ab", b"c")
    with pytest.raises(BlobRefused):
        signer.verify(sig, b"a", b"bc")
    with pytest.raises(BlobRefused):
        signer.verify(sig, b"abc")


def test_unknown_key_id_is_refused_by_name() -> None:
    sig = Signer({"k1": OLD}).sign(b"x")
    with pytest.raises(BlobRefused, match="unknown signing key id 'k1'"):
        Signer({"k2": NEW}).verify(sig, b"x")


def test_same_key_id_with_another_secret_is_refused() -> None:
    sig = Signer({"k1": OLD}).sign(b"x")
    with pytest.raises(BlobRefused, match="bad signature"):
        Signer({"k1": NEW}).verify(sig, b"x")


def test_signer_copies_its_keys() -> None:
    keys = {"k1": OLD}
    signer = Signer(keys)
    sig = signer.sign(b"x")
    keys["k1"] = NEW
    signer.verify(sig, b"x")


def test_non_ascii_digest_is_refused_not_crashing() -> None:
    signer = Signer({"k1": OLD})
    with pytest.raises(BlobRefused):
        signer.verify(Signature("k1", "é" * 64), b"x")


# --- pack / unpack -----------------------------------------------------------------------


def test_pack_unpack_round_trip() -> None:
    signer = Signer({"k1": OLD})
    obj = {"weights": [1.5, -2.0], "name": "m"}
    signed = pack(obj, make_meta(metrics={"accuracy": 0.9}, offsets={"t:0": 17}), signer)
    assert signed.signature.key_id == "k1"
    meta, back = unpack(signed, signer)
    assert back == obj
    assert (meta.app, meta.model, meta.version, meta.task, meta.examples_seen) == ("fraud", "fraud-lr", 3, "binary", 42)
    assert meta.metrics == {"accuracy": 0.9}
    assert meta.offsets == {"t:0": 17}
    assert meta.river_version == river.__version__
    assert meta.blob_sha256 == hashlib.sha256(signed.blob).hexdigest()
    assert json.loads(signed.meta)["blob_sha256"] == meta.blob_sha256


def test_pack_does_not_change_the_given_meta() -> None:
    meta = make_meta()
    pack([1], meta, Signer({"k1": OLD}))
    assert meta.blob_sha256 == ""


def test_tampered_blob_is_refused() -> None:
    signer = Signer({"k1": OLD})
    signed = pack({"a": 1}, make_meta(), signer)
    with pytest.raises(BlobRefused, match="bad signature"):
        verify(dataclasses.replace(signed, blob=flip(signed.blob)), signer)


def test_tampered_meta_is_refused() -> None:
    signer = Signer({"k1": OLD})
    signed = pack({"a": 1}, make_meta(version=3), signer)
    forged = signed.meta.replace(b'"version":3', b'"version":9')
    assert forged != signed.meta
    with pytest.raises(BlobRefused, match="bad signature"):
        verify(dataclasses.replace(signed, meta=forged), signer)


def test_signature_of_another_blob_is_refused() -> None:
    signer = Signer({"k1": OLD})
    a = pack("a", make_meta(), signer)
    b = pack("b", make_meta(), signer)
    with pytest.raises(BlobRefused):
        verify(dataclasses.replace(a, signature=b.signature), signer)
    with pytest.raises(BlobRefused):
        verify(SignedBlob(a.meta, b.blob, a.signature), signer)


def test_unknown_key_id_blob_is_refused() -> None:
    signed = pack("x", make_meta(), Signer({"k1": OLD}))
    with pytest.raises(BlobRefused, match="unknown signing key id"):
        verify(signed, Signer({"k2": NEW}))


def test_key_rotation() -> None:
    old_signer = Signer({"k1": OLD})
    rotated = Signer({"k2": NEW, "k1": OLD})
    old_blob = pack(["old"], make_meta(version=1), old_signer)

    meta, obj = unpack(old_blob, rotated)
    assert (meta.version, obj) == (1, ["old"])

    new_blob = pack(["new"], make_meta(version=2), rotated)
    assert new_blob.signature.key_id == "k2"
    assert unpack(new_blob, rotated)[1] == ["new"]
    assert unpack(new_blob, Signer({"k2": NEW}))[1] == ["new"]
    with pytest.raises(BlobRefused, match="unknown signing key id 'k2'"):
        unpack(new_blob, old_signer)

    retired = Signer({"k2": NEW})
    with pytest.raises(BlobRefused, match="unknown signing key id 'k1'"):
        unpack(old_blob, retired)


def test_river_version_mismatch_is_refused() -> None:
    signer = Signer({"k1": OLD})
    signed = pack({"a": 1}, make_meta(river_version="0.0.1"), signer)
    with pytest.raises(BlobRefused, match=r"river version mismatch: blob 0\.0\.1"):
        verify(signed, signer)


def test_blob_digest_must_match_the_meta() -> None:
    signer = Signer({"k1": OLD})
    blob = pickle.dumps({"a": 1})
    meta = make_meta(blob_sha256=hashlib.sha256(b"something else").hexdigest()).model_dump_json().encode()
    signed = SignedBlob(meta, blob, signer.sign(meta, blob))  # validly signed, inconsistent digest
    with pytest.raises(BlobRefused, match="digest does not match"):
        verify(signed, signer)
    good_meta = make_meta(blob_sha256=hashlib.sha256(blob).hexdigest()).model_dump_json().encode()
    assert unpack(SignedBlob(good_meta, blob, signer.sign(good_meta, blob)), signer)[1] == {"a": 1}


def test_meta_ignores_unknown_fields() -> None:
    signer = Signer({"k1": OLD})
    signed = pack("x", make_meta(), signer)
    data = json.loads(signed.meta)
    data["added_later"] = True
    meta_bytes = json.dumps(data).encode()
    meta = verify(SignedBlob(meta_bytes, signed.blob, signer.sign(meta_bytes, signed.blob)), signer)
    assert meta.version == 3


def test_the_side_effect_probe_works_on_a_valid_blob() -> None:
    signer = Signer({"k1": OLD})
    signed = pack(Exploding("valid"), make_meta(), signer)
    assert UNPICKLED == []
    _, obj = unpack(signed, signer)
    assert obj == "valid"
    assert UNPICKLED == ["valid"]


@pytest.mark.parametrize("how", REFUSALS)
def test_unpack_never_unpickles_a_refused_blob(how: str) -> None:
    signed, signer = tampered(how, Exploding(how), make_meta, Signer({"k1": OLD}), Signer({"k2": NEW}))
    with pytest.raises(BlobRefused):
        unpack(signed, signer)
    assert UNPICKLED == []


# --- signing keys in the settings ---------------------------------------------------------


def test_signing_key_map_keeps_order_and_first_signs() -> None:
    settings = Settings(environment="development", signing_keys=SecretStr(" new:" + NEW.decode() + " , old:" + OLD.decode()))
    keys = settings.signing_key_map
    assert list(keys) == ["new", "old"]
    assert keys == {"new": NEW, "old": OLD}
    assert Signer(keys).sign(b"x").key_id == "new"


@pytest.mark.parametrize("value", ["nokeyid", ":" + NEW.decode(), "k1:short", "k1:" + NEW.decode() + ",", "k1"])
def test_malformed_signing_keys_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="key_id:secret"):
        _ = Settings(environment="development", signing_keys=SecretStr(value)).signing_key_map


def test_production_refuses_the_dev_signing_key() -> None:
    with pytest.raises(ValueError, match="STREAMWISE_SIGNING_KEYS"):
        Settings(environment="production", signing_keys=SecretStr(DEV_SIGNING_KEY), api_keys=SecretStr("prod-api-key"))
    ok = Settings(environment="production", signing_keys=SecretStr("prod:" + NEW.decode()), api_keys=SecretStr("prod-api-key"))
    assert list(ok.signing_key_map) == ["prod"]


def test_production_refuses_the_dev_signing_key_anywhere_in_the_list() -> None:
    with pytest.raises(ValueError, match="STREAMWISE_SIGNING_KEYS"):
        Settings(
            environment="production",
            signing_keys=SecretStr("prod:" + NEW.decode() + "," + DEV_SIGNING_KEY),
            api_keys=SecretStr("prod-api-key"),
        )


def test_random_states_pickle_as_bytes_and_resume_the_same_sequence() -> None:
    import pickle
    import random

    from streamwise_core.contracts.codec import dumps

    rngs = [random.Random(seed) for seed in range(3)]
    for rng in rngs:
        rng.random()
        rng.gauss(0, 1)  # leaves a gauss_next behind
    blob = dumps({"rngs": rngs, "same": rngs[0]})
    assert len(blob) < 0.75 * len(pickle.dumps(rngs, protocol=pickle.HIGHEST_PROTOCOL))
    copy = pickle.loads(blob)
    assert copy["rngs"][0] is copy["same"]  # shared objects stay shared
    for original, restored in zip(rngs, copy["rngs"], strict=True):
        assert type(restored) is random.Random
        assert restored.getstate() == original.getstate()
        assert [restored.gauss(0, 1), restored.random()] == [original.gauss(0, 1), original.random()]


def test_unseeded_gaussians_pickle_without_their_generator_and_seeded_ones_with_it() -> None:
    import pickle
    import random

    from river import proba

    from streamwise_core.contracts.codec import dumps

    unseeded, seeded = proba.Gaussian(), proba.Gaussian(seed=7)
    for x in (1.0, 2.5, 4.0):
        unseeded.update(x)
        seeded.update(x)
    seeded.sample()  # moves its generator on
    blob = dumps({"unseeded": [unseeded, unseeded], "seeded": seeded})
    copy = pickle.loads(blob)
    restored = copy["unseeded"][0]
    assert copy["unseeded"][1] is restored  # shared objects stay shared
    assert type(restored) is proba.Gaussian and restored.seed is None
    assert (restored.n_samples, restored.mu, restored.sigma) == (unseeded.n_samples, unseeded.mu, unseeded.sigma)
    assert restored(3.0) == unseeded(3.0)
    assert type(restored._rng) is random.Random and restored._rng is not unseeded._rng
    restored.update(5.0)
    unseeded.update(5.0)
    assert restored.mu == unseeded.mu
    # A seeded one resumes the same samples.
    assert copy["seeded"]._rng.getstate() == seeded._rng.getstate()
    assert [copy["seeded"].sample() for _ in range(3)] == [seeded.sample() for _ in range(3)]
    # The unseeded generator's 625 words are not in the blob: a seeded Gaussian's are.
    assert len(dumps(unseeded)) < 400 < len(dumps(seeded))


def test_a_hoeffding_tree_blob_is_small_and_predicts_the_same_after_loading() -> None:
    import pickle

    from river import tree

    from streamwise_core.contracts.codec import dumps
    from streamwise_devstack.fraud import FraudStream

    model = tree.HoeffdingTreeClassifier(grace_period=50)
    events = FraudStream(seed=2, drift_at=10**9).take(3000)
    numeric = [({k: float(v) for k, v in g.features.items() if not isinstance(v, str)}, g.label) for g in events]
    for x, y in numeric:
        model.learn_one(x, y)
    blob = dumps(model)
    assert len(blob) < 0.2 * len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    loaded = pickle.loads(blob)
    assert [loaded.predict_proba_one(x) for x, _ in numeric[:300]] == [model.predict_proba_one(x) for x, _ in numeric[:300]]
    for x, y in numeric[:500]:  # and learns on identically
        loaded.learn_one(x, y)
        model.learn_one(x, y)
    assert [loaded.predict_proba_one(x) for x, _ in numeric[-300:]] == [model.predict_proba_one(x) for x, _ in numeric[-300:]]
