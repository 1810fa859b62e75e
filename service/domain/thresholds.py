"""Which distance threshold is in force, and where it came from.

Verification (1:1) and identification (1:N) need different thresholds: one comparison versus one
probe against every enrolled face, where the chance that *some* stranger face falls within the
threshold grows with the gallery. Precedence, highest first:

- identify: the request's ``threshold`` → the collection's own (set by PATCH or by calibration) →
  ``FACES_DEFAULT_IDENTIFY_THRESHOLD`` → the model card's ``identify_threshold`` → its ``threshold``;
- verify: the request's ``threshold`` → ``FACES_DEFAULT_THRESHOLD`` → the model card's ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from service.errors import InvalidRequest
from service.runtime.model_card import ModelCard

ThresholdSource = Literal["request", "model_card", "settings", "collection", "calibration"]
# What a collection row may carry as the origin of its own threshold.
COLLECTION_SOURCES: frozenset[str] = frozenset({"collection", "calibration"})


@dataclass(frozen=True, slots=True)
class ThresholdInForce:
    value: float  # squared L2 distance in [0, 4]
    source: ThresholdSource
    set_at: datetime | None = None


def check_threshold(value: float) -> float:
    """Thresholds are squared distances between unit vectors: [0, 4], nothing else is stored or used."""
    if not 0.0 <= value <= 4.0:
        raise InvalidRequest("threshold is a squared L2 distance and must lie in [0, 4].")
    return float(value)


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    """The service-wide defaults (model card, settings); collections may override identify."""

    verify_default: ThresholdInForce
    identify_default: ThresholdInForce

    @classmethod
    def build(
        cls, card: ModelCard, *, verify_override: float | None, identify_override: float | None
    ) -> ThresholdPolicy:
        verify = (
            ThresholdInForce(check_threshold(verify_override), "settings")
            if verify_override is not None
            else ThresholdInForce(card.threshold, "model_card")
        )
        if identify_override is not None:
            identify = ThresholdInForce(check_threshold(identify_override), "settings")
        elif card.identify_threshold is not None:
            identify = ThresholdInForce(card.identify_threshold, "model_card")
        else:
            identify = ThresholdInForce(card.threshold, "model_card")
        return cls(verify, identify)

    def identify_for(
        self, value: float | None, source: str | None = None, set_at: datetime | None = None
    ) -> ThresholdInForce:
        """The identify threshold of a collection carrying ``value`` (None: the service default)."""
        if value is None:
            return self.identify_default
        origin: ThresholdSource = "calibration" if source == "calibration" else "collection"
        return ThresholdInForce(float(value), origin, set_at)

    def identify(
        self, requested: float | None, collection_value: float | None, collection_source: str | None = None
    ) -> ThresholdInForce:
        """What an identify request uses: its own threshold, else the collection's, else the default."""
        if requested is not None:
            return ThresholdInForce(check_threshold(requested), "request")
        return self.identify_for(collection_value, collection_source)

    def verify(self, requested: float | None) -> ThresholdInForce:
        if requested is not None:
            return ThresholdInForce(check_threshold(requested), "request")
        return self.verify_default
