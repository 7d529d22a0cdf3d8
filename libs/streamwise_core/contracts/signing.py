"""HMAC signing of model blobs, with key rotation by key id."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from streamwise_core.contracts.errors import BlobRefused


@dataclass(frozen=True)
class Signature:
    key_id: str
    digest: str


class Signer:
    """Signs with the first key; verifies with any key still listed (rotation window)."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._keys = dict(keys)
        self._active = next(iter(keys))

    @staticmethod
    def _mac(key: bytes, *parts: bytes) -> str:
        mac = hmac.new(key, digestmod=hashlib.sha256)
        for part in parts:
            # Length-prefix each part so no two different splits sign the same bytes.
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.hexdigest()

    def sign(self, *parts: bytes) -> Signature:
        return Signature(self._active, self._mac(self._keys[self._active], *parts))

    def verify(self, signature: Signature, *parts: bytes) -> None:
        """Raise ``BlobRefused`` unless ``signature`` is valid for ``parts``."""
        key = self._keys.get(signature.key_id)
        if key is None:
            raise BlobRefused(f"unknown signing key id {signature.key_id!r}")
        given = signature.digest.encode("utf-8", "replace")
        if not hmac.compare_digest(self._mac(key, *parts).encode(), given):
            raise BlobRefused("bad signature")
