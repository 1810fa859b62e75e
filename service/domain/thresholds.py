"""Which distance threshold is in force, and where it came from: the one path for identify and verify.

Verification (1:1) and identification (1:N) need different thresholds: one comparison versus one
probe against every enrolled face, where the chance that *some* stranger face falls within the
threshold grows with the gallery. Precedence, highest first:

- identify: the request's ``threshold`` → the collection's own (set by PATCH or by calibration) →
  ``FACES_DEFAULT_IDENTIFY_THRESHOLD`` → the model card's ``identify_threshold_by_size`` read at the
  collection's number of subjects (and photos per subject) → its single ``identify_threshold`` → its
  ``threshold``;
- verify: the request's ``threshold`` → ``FACES_DEFAULT_THRESHOLD`` → the model card's ``threshold``.

The store hands out a collection's own threshold as one :class:`OwnThreshold` record, and its
numbers of subjects and faces from counters it keeps (no scan); the policy resolves them (with the request's
value, if any) into a :class:`ThresholdInForce`.

Why a ladder by size: a stranger is named when *some* enrolled subject lies within the threshold, and
the more people are enrolled the likelier one of them is a look-alike. One fixed value therefore lets
few strangers through in a small gallery (and misses more of the people it should name) and many in a
large one; the card's ladder gives the threshold measured for the same stranger rate at each size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from service.errors import InvalidRequest
from service.runtime.model_card import IdentifyThresholdBySize, ModelCard
from service.storage.records import OwnThreshold, OwnThresholdSource

# Where a threshold in force comes from. Every name is spelled here (the collection's own two beside
# the stored record), and the API's schemas use these types.
DefaultSource = Literal["model_card", "settings"]  # the service-wide defaults (verify's too)
IdentifyDefaultSource = Literal[DefaultSource, "model_card_by_size"]
# A collection's threshold when a request gives none; "request" when one does.
InForceSource = Literal[IdentifyDefaultSource, OwnThresholdSource]
ThresholdSource = Literal["request", InForceSource]


@dataclass(frozen=True, slots=True)
class ThresholdInForce:
    value: float  # squared L2 distance in [0, 4]
    source: ThresholdSource
    set_at: datetime | None = None  # when the collection's own threshold was set
    read_at_subjects: int | None = None  # model_card_by_size: the collection size it was read at
    read_at_faces: int | None = None  # ... and the number of enrolled faces


def check_threshold(value: float) -> float:
    """Thresholds are squared distances between unit vectors: [0, 4], nothing else is stored or used."""
    if not 0.0 <= value <= 4.0:
        raise InvalidRequest("threshold is a squared L2 distance and must lie in [0, 4].")
    return float(value)


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    """The service-wide defaults (model card, settings); collections may override identify."""

    verify_default: ThresholdInForce
    identify_default: ThresholdInForce  # fixed: settings, else the card's single value
    identify_by_size: IdentifyThresholdBySize | None = None  # the card's, unless settings override it

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
            return cls(verify, ThresholdInForce(check_threshold(identify_override), "settings"))
        if card.identify_threshold is not None:
            identify = ThresholdInForce(card.identify_threshold, "model_card")
        else:
            identify = ThresholdInForce(card.threshold, "model_card")
        return cls(verify, identify, card.identify_threshold_by_size)

    def describe_identify_default(self) -> str:
        """One line for the start-up log."""
        if self.identify_by_size is None:
            return f"{self.identify_default.value:.4f} ({self.identify_default.source})"
        ladders = "; ".join(
            f"{ladder.enroll_count} photo(s)/subject: "
            + ", ".join(f"{s.threshold:.4f} at {s.gallery_size}" for s in ladder.steps)
            for ladder in self.identify_by_size.ladders
        )
        return f"by collection size (model_card_by_size), {ladders} subjects"

    def identify_default_at(self, subjects: int, faces: int) -> ThresholdInForce:
        """The service's identify default for a collection of ``subjects`` people and ``faces`` faces."""
        if self.identify_by_size is None:
            return self.identify_default
        value = round(self.identify_by_size.at(subjects, faces), 6)
        return ThresholdInForce(value, "model_card_by_size", read_at_subjects=subjects, read_at_faces=faces)

    def for_collection(self, own: OwnThreshold | None, subjects: int, faces: int) -> ThresholdInForce:
        """The identify threshold of a collection when a request gives none: its own, else the
        service default at its size."""
        if own is None:
            return self.identify_default_at(subjects, faces)
        return ThresholdInForce(own.value, own.source, own.set_at)

    def identify(
        self, requested: float | None, own: OwnThreshold | None, subjects: int, faces: int
    ) -> ThresholdInForce:
        """What an identify request uses: its own threshold, else the collection's."""
        if requested is not None:
            return ThresholdInForce(check_threshold(requested), "request")
        return self.for_collection(own, subjects, faces)

    def verify(self, requested: float | None) -> ThresholdInForce:
        """What a verify request uses: its own threshold, else the service's verification default."""
        if requested is not None:
            return ThresholdInForce(check_threshold(requested), "request")
        return self.verify_default
