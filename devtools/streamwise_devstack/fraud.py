"""Synthetic card transactions for the demo app "fraud", with a concept drift (pure, no I/O).

Before ``drift_at`` fraud is big card-not-present purchases (electronics, online retail,
travel) far from home at night. From ``drift_at`` on it is card testing with a skimmed
card: small repeated amounts, mostly in gambling and crypto, card present, often abroad,
several transactions in the last hour. Legitimate spending never changes, so a model trained on
the old concept misses the new fraud until it learns it online. Both concepts are
roughly linearly separable on standardized numbers plus one-hot ``merchant``; a small
share of labels is flipped as noise.
"""

from __future__ import annotations

import heapq
import math
import random
import sys
from dataclasses import dataclass, field

__all__ = [
    "CONCEPTS",
    "MERCHANTS",
    "DueLabel",
    "FraudStream",
    "GeneratedEvent",
    "LateLabels",
    "holdout",
]

FeatureValue = float | int | str | bool

MERCHANTS: tuple[str, ...] = (
    "grocery",
    "fuel",
    "electronics",
    "travel",
    "restaurant",
    "online_retail",
    "gambling",
    "crypto",
)

CONCEPTS: dict[bool, str] = {
    False: "big card-not-present buys far from home at night",
    True: "small repeated card-present amounts in gambling/crypto, often abroad",
}
"""What fraud looks like, by ``after_drift``."""

# Legitimate spending: merchant share, typical amount, and how often the card is present.
_LEGIT_MERCHANT_WEIGHTS = (0.27, 0.15, 0.07, 0.08, 0.20, 0.13, 0.05, 0.05)
_LEGIT_TYPICAL_AMOUNT = {
    "grocery": 45.0,
    "fuel": 55.0,
    "electronics": 180.0,
    "travel": 280.0,
    "restaurant": 35.0,
    "online_retail": 60.0,
    "gambling": 40.0,
    "crypto": 150.0,
}
_ONLINE_MERCHANTS = frozenset({"online_retail", "gambling", "crypto"})

_FRAUD_BEFORE_MERCHANT_WEIGHTS = (0.02, 0.02, 0.40, 0.16, 0.02, 0.34, 0.02, 0.02)
_FRAUD_AFTER_MERCHANT_WEIGHTS = (0.06, 0.05, 0.03, 0.03, 0.05, 0.03, 0.38, 0.37)


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    """One transaction: its id, features, observed label and position in the stream."""

    id: str
    features: dict[str, FeatureValue]
    label: bool
    index: int
    after_drift: bool = False


def _clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]``."""
    return max(low, min(high, value))


def _small_count(rng: random.Random, mean: float) -> int:
    """A non-negative integer with the given mean and a geometric tail."""
    return int(rng.expovariate(1.0 / mean))


class FraudStream:
    """Deterministic stream of labelled card transactions for one seed."""

    def __init__(
        self,
        seed: int = 7,
        *,
        drift_at: int = 20_000,
        fraud_rate: float = 0.25,
        label_noise: float = 0.03,
        run_id: str | None = None,
    ) -> None:
        if not 0.0 < fraud_rate < 1.0:
            raise ValueError("fraud_rate must be between 0 and 1")
        if not 0.0 <= label_noise < 0.5:
            raise ValueError("label_noise must be in [0, 0.5)")
        if drift_at < 0:
            raise ValueError("drift_at must not be negative")
        self.seed = seed
        self.drift_at = drift_at
        self.fraud_rate = fraud_rate
        self.label_noise = label_noise
        self.run_id = run_id if run_id is not None else f"fraud-s{seed}"
        self._rng = random.Random(seed)
        self._index = 0

    @property
    def index(self) -> int:
        """The index the next event will have."""
        return self._index

    def after_drift(self, index: int | None = None) -> bool:
        """Whether the event at ``index`` (the next one by default) follows the new concept."""
        return (self._index if index is None else index) >= self.drift_at

    def next_event(self) -> GeneratedEvent:
        """The next transaction of the stream."""
        index = self._index
        self._index += 1
        drifted = index >= self.drift_at
        fraud = self._rng.random() < self.fraud_rate
        if not fraud:
            features = self._legit()
        elif drifted:
            features = self._fraud_after()
        else:
            features = self._fraud_before()
        label = fraud != (self._rng.random() < self.label_noise)
        return GeneratedEvent(f"{self.run_id}-{index}", features, label, index, drifted)

    def take(self, n: int) -> list[GeneratedEvent]:
        """The next ``n`` transactions."""
        return [self.next_event() for _ in range(n)]

    def _legit(self) -> dict[str, FeatureValue]:
        """An ordinary purchase near home during the day."""
        rng = self._rng
        merchant = rng.choices(MERCHANTS, _LEGIT_MERCHANT_WEIGHTS)[0]
        travelling = merchant == "travel" or rng.random() < 0.03
        is_foreign = travelling and rng.random() < 0.35
        distance = rng.expovariate(1 / 8.0) + (rng.expovariate(1 / 400.0) if travelling else 0.0)
        card_present = rng.random() < (0.12 if merchant in _ONLINE_MERCHANTS else 0.88)
        return _features(
            amount=_LEGIT_TYPICAL_AMOUNT[merchant] * rng.lognormvariate(0.0, 0.6),
            hour=rng.gauss(14.5, 4.0),
            distance_km=distance,
            is_foreign=is_foreign,
            card_present=card_present,
            merchant=merchant,
            txn_last_hour=_small_count(rng, 0.9),
        )

    def _fraud_before(self) -> dict[str, FeatureValue]:
        """A big card-not-present purchase far from home, mostly at night."""
        rng = self._rng
        merchant = rng.choices(MERCHANTS, _FRAUD_BEFORE_MERCHANT_WEIGHTS)[0]
        hour = rng.uniform(0, 5.99) if rng.random() < 0.75 else rng.uniform(0, 23.99)
        return _features(
            amount=650.0 * rng.lognormvariate(0.0, 0.5),
            hour=hour,
            distance_km=150.0 + rng.expovariate(1 / 1500.0),
            is_foreign=rng.random() < 0.4,
            card_present=rng.random() < 0.05,
            merchant=merchant,
            txn_last_hour=_small_count(rng, 1.2),
        )

    def _fraud_after(self) -> dict[str, FeatureValue]:
        """Card testing with a skimmed card: small, repeated, card present, often abroad."""
        rng = self._rng
        merchant = rng.choices(MERCHANTS, _FRAUD_AFTER_MERCHANT_WEIGHTS)[0]
        return _features(
            amount=12.0 * rng.lognormvariate(0.0, 0.5),
            hour=rng.gauss(14.0, 5.0),
            distance_km=rng.expovariate(1 / 25.0),
            is_foreign=rng.random() < 0.5,
            card_present=rng.random() < 0.92,
            merchant=merchant,
            txn_last_hour=1 + _small_count(rng, 3.0),
        )


def _features(
    *,
    amount: float,
    hour: float,
    distance_km: float,
    is_foreign: bool,
    card_present: bool,
    merchant: str,
    txn_last_hour: int,
) -> dict[str, FeatureValue]:
    """Features rounded and clamped to plausible values, in spec order."""
    return {
        "amount": round(_clamp(amount, 0.5, 50_000.0), 2),
        "hour": int(_clamp(math.floor(hour), 0, 23)),
        "distance_km": round(_clamp(distance_km, 0.0, 20_000.0), 1),
        "is_foreign": is_foreign,
        "card_present": card_present,
        "merchant": merchant,
        "txn_last_hour": min(txn_last_hour, 99),
    }


@dataclass(frozen=True, slots=True, order=True)
class DueLabel:
    """A label held back from its event, due once the stream reaches ``due_index``."""

    due_index: int
    event_index: int
    id: str = field(compare=False)
    label: bool = field(compare=False)


class LateLabels:
    """Decide per event whether its label travels inline or arrives later, and when."""

    def __init__(
        self,
        seed: int = 7,
        *,
        late_fraction: float = 0.3,
        min_delay: int = 50,
        max_delay: int = 500,
    ) -> None:
        if not 0.0 <= late_fraction <= 1.0:
            raise ValueError("late_fraction must be in [0, 1]")
        if not 1 <= min_delay <= max_delay:
            raise ValueError("need 1 <= min_delay <= max_delay")
        self.late_fraction = late_fraction
        self.min_delay = min_delay
        self.max_delay = max_delay
        self._rng = random.Random(f"late-labels-{seed}")
        self._pending: list[DueLabel] = []

    @property
    def pending(self) -> int:
        """How many late labels are still held back."""
        return len(self._pending)

    def route(self, event: GeneratedEvent) -> bool:
        """True when the label goes inline; otherwise it is held back for a later ``due``."""
        if self._rng.random() >= self.late_fraction:
            return True
        delay = self._rng.randint(self.min_delay, self.max_delay)
        heapq.heappush(self._pending, DueLabel(event.index + delay, event.index, event.id, event.label))
        return False

    def due(self, index: int) -> list[DueLabel]:
        """Late labels due once the stream has sent the event at ``index``, oldest first."""
        out: list[DueLabel] = []
        while self._pending and self._pending[0].due_index <= index:
            out.append(heapq.heappop(self._pending))
        return out

    def drain(self) -> list[DueLabel]:
        """Every label still held back (the stream ends), in due order."""
        return self.due(sys.maxsize)


def holdout(n: int, seed: int, after_drift: bool) -> list[GeneratedEvent]:
    """``n`` labelled transactions entirely of the old or the new concept."""
    suffix = "after" if after_drift else "before"
    stream = FraudStream(seed, drift_at=0 if after_drift else sys.maxsize, run_id=f"holdout-s{seed}-{suffix}")
    return stream.take(n)
