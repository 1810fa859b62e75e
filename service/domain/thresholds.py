"""Which distance threshold is in force, and where it came from: the one path for identify and verify.

Verification (1:1) and identification (1:N) need different thresholds: one comparison versus one
probe against every enrolled face, where the chance that *some* stranger face falls within the
threshold grows with the gallery. Precedence, highest first:

- identify: the request's ``threshold`` → the collection's own (set by PATCH or by calibration) →
  ``FACES_DEFAULT_IDENTIFY_THRESHOLD`` → the model card's ``identify_threshold`` → its ``threshold``;
- verify: the request's ``threshold`` → ``FACES_DEFAULT_THRESHOLD`` → the model card's ``threshold``.

The store hands out a collection's own threshold as one :class:`OwnThreshold` record; the policy
resolves it (with the request's value, if any) into a :class:`ThresholdInForce`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from service.errors import InvalidRequest
from service.runtime.model_card import ModelCard
from service.storage.records import OwnThreshold, OwnThresholdSource

# Where a threshold in force comes from. Every name is spelled here (the collection's own two beside
# the stored record), and the API's schemas use these types.
DefaultSource = Literal["model_card", "settings"]  # the service-wide defaults
InForceSource = Literal[DefaultSource, OwnThresholdSource]  # a collection's, when a request gives none
ThresholdSource = Literal["request", InForceSource]


@dataclass(frozen=True, slots=True)
class ThresholdInForce:
    value: float  # squared L2 distance in [0, 4]
    source: ThresholdSource
    set_at: datetime | None = None  # when the collection's own threshold was set


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

    def for_collection(self, own: OwnThreshold | None) -> ThresholdInForce:
        """The identify threshold of a collection when a request gives none: its own, else the default."""
        if own is None:
            return self.identify_default
        return ThresholdInForce(own.value, own.source, own.set_at)

    def identify(self, requested: float | None, own: OwnThreshold | None) -> ThresholdInForce:
        """What an identify request uses: its own threshold, else the collection's."""
        if requested is not None:
            return ThresholdInForce(check_threshold(requested), "request")
        return self.for_collection(own)

    def verify(self, requested: float | None) -> ThresholdInForce:
        """What a verify request uses: its own threshold, else the service's verification default."""
        if requested is not None:
            return ThresholdInForce(check_threshold(requested), "request")
        return self.verify_default
