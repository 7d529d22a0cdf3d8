"""Six ways a signed model blob can be refused, shared by the codec's and the loader's tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack
from streamwise_core.contracts.signing import Signature, Signer

REFUSALS = ["signature", "blob", "meta", "key", "river", "digest"]


def tampered(
    how: str, obj: Any, make_meta: Callable[..., ModelMeta], signer: Signer, other_signer: Signer,
) -> tuple[SignedBlob, Signer]:
    """``obj`` packed with ``make_meta()`` and then spoiled ``how``; with the signer to verify it.

    ``make_meta()`` must give version 3, so that the forged metadata differs."""
    signed = pack(obj, make_meta(), signer)
    match how:
        case "signature":
            signed = dataclasses.replace(signed, signature=Signature("k1", "0" * 64))
        case "blob":
            signed = dataclasses.replace(signed, blob=signed.blob + b".")
        case "meta":
            forged = signed.meta.replace(b'"version":3', b'"version":4')
            assert forged != signed.meta
            signed = dataclasses.replace(signed, meta=forged)
        case "key":
            signer = other_signer
        case "river":
            signed = pack(obj, make_meta(river_version="0.0.1"), signer)
        case "digest":
            meta_bytes = make_meta(blob_sha256="0" * 64).model_dump_json().encode()
            signed = SignedBlob(meta_bytes, signed.blob, signer.sign(meta_bytes, signed.blob))
        case _:
            raise ValueError(how)
    return signed, signer
