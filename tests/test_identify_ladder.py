"""The model card's identify ladders by gallery size, and the order in which thresholds win.

Pure: a ladder read at every size against an independent reading (numpy's interp on log sizes), the
clamps at both ends, the reading between ladders of 1 and 5 photos per person, and the policy's
precedence with and without ladders in the card.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from service.domain.thresholds import ThresholdPolicy
from service.errors import InvalidModelCard
from service.runtime.model_card import IdentifyLadder, IdentifyThresholdBySize, ModelCard
from service.settings import DEFAULT_MODEL_DIR
from service.storage.records import OwnThreshold

STEPS = [(10, 1.16), (30, 1.12), (100, 1.09), (300, 1.07), (1000, 1.04), (3000, 1.01)]
FIVE_PHOTOS = [(10, 1.10), (30, 1.07), (100, 1.05), (400, 1.03)]  # measured less far, as on LFW


def ladder(steps: list[tuple[int, float]] = STEPS, enroll_count: int = 1) -> IdentifyLadder:
    return IdentifyLadder.model_validate(
        {"enroll_count": enroll_count, "steps": [{"gallery_size": g, "threshold": t} for g, t in steps]}
    )


def by_size() -> IdentifyThresholdBySize:
    return IdentifyThresholdBySize(target_fpir=0.01, ladders=[ladder(), ladder(FIVE_PHOTOS, 5)])


def shipped() -> ModelCard:
    return ModelCard.load(DEFAULT_MODEL_DIR / "embedder.json")


def test_ladder_reads_log_interpolated_values_clamped_at_both_ends() -> None:
    read = ladder()
    sizes = np.asarray([g for g, _ in STEPS], dtype=np.float64)
    values = np.asarray([t for _, t in STEPS])
    for subjects in range(0, 6001):
        # np.interp clamps outside [first, last]; log(0) is avoided by reading 0 subjects as 1
        expected = float(np.interp(np.log(max(subjects, 1)), np.log(sizes), values))
        assert read.at(subjects) == pytest.approx(expected, abs=1e-12), subjects
    assert read.at(0) == read.at(10) == 1.16  # below the first step: its value
    assert read.at(10**6) == read.at(3000) == 1.01  # beyond the last: its value
    # between two steps the value lies between theirs; halfway in log size it is halfway in value
    assert read.at(int(np.sqrt(10 * 30) + 0.5)) == pytest.approx((1.16 + 1.12) / 2, abs=2e-3)
    assert all(read.at(n) >= read.at(n + 1) for n in range(5000))  # tightens as the gallery grows


def test_ladder_with_one_step_is_that_value_everywhere() -> None:
    single = ladder([(100, 1.05)])
    assert {single.at(n) for n in (0, 1, 99, 100, 101, 10**5)} == {1.05}


def test_between_ladders_by_photos_per_subject_and_beyond_the_shorter_one() -> None:
    read, one, five = by_size(), ladder(), ladder(FIVE_PHOTOS, 5)
    assert read.at(0, 0) == one.at(0)  # an empty collection: the 1-photo ladder's first step
    for subjects in (1, 10, 20, 55, 100, 399, 400):
        assert read.at(subjects, subjects) == pytest.approx(one.at(subjects), abs=1e-12)
        assert read.at(subjects, 5 * subjects) == pytest.approx(five.at(subjects), abs=1e-12)
        assert read.at(subjects, 50 * subjects) == read.at(subjects, 5 * subjects)  # clamped at 5
        assert read.at(subjects, 0) == read.at(subjects, subjects)  # and at 1 (no faces yet)
    # in between: linear in log(photos per subject), so √5 ≈ 2.236 photos sit halfway
    assert read.at(1000, 2236) == pytest.approx(
        (one.at(1000) + five.at(400) + one.at(1000) - one.at(400)) / 2, abs=1e-4
    )
    assert read.at(100, 224) == pytest.approx((one.at(100) + five.at(100)) / 2, abs=2e-4)
    # beyond the 5-photo ladder's last step (400) it follows the 1-photo ladder's shape from there
    for subjects in (400, 1000, 3000, 100_000):
        expected = five.at(400) + one.at(subjects) - one.at(400)
        assert read.at(subjects, 5 * subjects) == pytest.approx(expected, abs=1e-12)
    assert read.at(3000, 15000) < read.at(400, 2000)  # it keeps tightening


@pytest.mark.parametrize(
    "steps", [[(10, 1.1), (10, 1.0)], [(30, 1.1), (10, 1.0)], [(10, 4.5)], [(0, 1.0)], []]
)
def test_bad_ladders_are_refused(steps: list[tuple[int, float]]) -> None:
    with pytest.raises(ValueError, match=r"gallery|threshold|steps|List"):
        ladder(steps)


def test_a_card_with_a_bad_ladder_does_not_load(tmp_path: Path) -> None:
    data = shipped().model_dump(mode="json")
    data["identify_threshold_by_size"] = {
        "target_fpir": 0.01,
        "steps": [{"gallery_size": 10, "threshold": 9}],
    }
    path = tmp_path / "card.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidModelCard, match="identify_threshold_by_size"):
        ModelCard.load(path)


def test_shipped_card_ladders_tighten_with_size() -> None:
    card = shipped()
    read = card.identify_threshold_by_size
    assert read is not None
    assert card.identify_threshold is not None
    assert read.target_fpir == card.metrics["openset"]["target_fpir"]
    assert [ladder.enroll_count for ladder in read.ladders] == [1, 5]
    one = read.ladders[0]
    assert one.steps[0].gallery_size == 10
    assert one.steps[-1].gallery_size >= 3000
    for photos in (1, 5):
        values = [read.at(n, photos * n) for n in (10, 100, 1000, 3000)]
        assert values == sorted(values, reverse=True)  # tightens as the gallery grows
        assert values[0] > card.identify_threshold  # a household gets a looser one than today's
        assert card.threshold > values[0]  # still stricter than 1:1 verification
    assert read.at(20, 100) < read.at(20, 20)  # 5 photos each: more chances for a look-alike


def test_precedence_with_a_ladder() -> None:
    card = shipped()
    read = card.identify_threshold_by_size
    assert read is not None
    policy = ThresholdPolicy.build(card, verify_override=None, identify_override=None)
    own = OwnThreshold(0.93, "calibration", datetime(2026, 1, 1, tzinfo=UTC))
    # request → collection's own → the card's ladders at the collection's size
    asked = policy.identify(0.5, own, 20, 100)
    assert (asked.value, asked.source) == (0.5, "request")
    calibrated = policy.identify(None, own, 20, 100)
    assert (calibrated.value, calibrated.source, calibrated.read_at_subjects) == (0.93, "calibration", None)
    default = policy.identify(None, None, 20, 100)
    assert (default.source, default.read_at_subjects, default.read_at_faces) == (
        "model_card_by_size",
        20,
        100,
    )
    assert default.value == pytest.approx(read.at(20, 100), abs=1e-6)
    assert policy.for_collection(None, 20000, 100000).value < default.value
    # FACES_DEFAULT_IDENTIFY_THRESHOLD beats the card's ladders, whatever the size
    configured = ThresholdPolicy.build(card, verify_override=None, identify_override=0.7)
    for subjects in (0, 20, 5000):
        in_force = configured.for_collection(None, subjects, 5 * subjects)
        assert (in_force.value, in_force.source) == (0.7, "settings")
    assert configured.for_collection(own, 20, 100).source == "calibration"
    # verify never reads the ladders
    assert policy.verify(None).value == card.threshold
    assert policy.verify(None).source == "model_card"


def test_a_card_without_ladders_keeps_todays_single_value() -> None:
    card = shipped().model_copy(update={"identify_threshold_by_size": None})
    policy = ThresholdPolicy.build(card, verify_override=None, identify_override=None)
    for subjects in (0, 20, 5000):
        in_force = policy.for_collection(None, subjects, 5 * subjects)
        assert (in_force.value, in_force.source, in_force.read_at_subjects) == (
            card.identify_threshold,
            "model_card",
            None,
        )
    bare = card.model_copy(update={"identify_threshold": None})
    bare_policy = ThresholdPolicy.build(bare, verify_override=None, identify_override=None)
    assert bare_policy.for_collection(None, 20, 20).value == bare.threshold
