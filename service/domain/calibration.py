"""Self-calibration of a collection's identification threshold from its own enrolled faces.

A stranger is someone not in the gallery. Every enrolled subject can play one: its faces searched
against the *other* subjects (leave-one-subject-out) are stranger probes against a gallery of almost
exactly this collection's size and make-up, so the share of them whose closest other subject is
within a threshold estimates the false-positive identification rate (FPIR) that threshold gives here.
A subject's faces searched against its own other faces (when it has several) estimate the genuine
accept rate: the right subject is closest and within the threshold.

Pure numpy on the store's embeddings (batched matrix products, probes sampled when the collection is
large), independent of the search index.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from service.domain.faces import squared_distance, squared_distances
from service.domain.fpir import threshold_at_fpir
from service.domain.gallery import Gallery
from service.domain.thresholds import ThresholdInForce, ThresholdPolicy
from service.errors import CalibrationBusy, CalibrationNotPossible

logger = logging.getLogger(__name__)

# Probes are sampled beyond this many faces: 5000 probes against 100k faces is ~64 GFLOP.
MAX_PROBES = 5000
PROBE_CHUNK = 256
SCORE_ELEMENTS = 32 * 1024 * 1024
SAMPLE_SEED = 0
# Below these the estimate is reported with a warning.
MIN_SUBJECTS = 20
MIN_EXPECTED_FALSE_ACCEPTS = 10
WithheldReason = Literal["too_few_subjects", "too_few_faces"]
# Why a recommendation is withheld (the estimate is kept, but not offered or applied):
# fewer than MIN_SUBJECTS subjects stand in for strangers ...
TOO_FEW_SUBJECTS: WithheldReason = "too_few_subjects"
# ... or fewer than 1 / target_fpir probes: not one false match may occur, so the threshold just sits
# below the closest stranger and says nothing about the target.
TOO_FEW_FACES: WithheldReason = "too_few_faces"


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    threshold: float
    estimated_fpir: float
    genuine_accept_rate: float | None  # None: no subject has two faces


@dataclass(frozen=True, slots=True)
class Calibration:
    """``recommended`` is the raw estimate for ``target_fpir``; ``recommendation`` what may be offered
    and applied: None when ``withheld`` names why these faces cannot support one, else the estimate
    capped at the verification threshold (``capped``): 1:N never accepts what 1:1 would reject."""

    target_fpir: float
    current: OperatingPoint
    recommended: OperatingPoint
    subjects: int
    faces: int
    impostor_probes: int  # faces searched as strangers (sampled when the collection is large)
    genuine_probes: int  # of those, faces whose subject has another face
    subjects_with_several_faces: int
    sampled: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)
    recommendation: OperatingPoint | None = None
    withheld: list[WithheldReason] = field(default_factory=list)
    capped: bool = False


@dataclass(frozen=True, slots=True)
class ProbeDistances:
    impostor_best: NDArray[np.float64]  # per probe: d² to the closest face of another subject
    genuine_best: NDArray[np.float64]  # per probe: d² to its own subject's closest other face (inf: none)


def probe_distances(
    vectors: NDArray[np.float32], subjects: NDArray[np.int64], probes: NDArray[np.int64]
) -> ProbeDistances:
    """Leave-one-subject-out impostor and leave-one-face-out genuine distances, in probe chunks.

    One (chunk, N) matrix product per chunk, chunks sized to ~128 MB of float32 scores.
    """
    n_faces = subjects.size
    order = np.argsort(subjects, kind="stable")
    sorted_subjects = subjects[order]
    starts = np.searchsorted(sorted_subjects, subjects[probes], side="left")
    ends = np.searchsorted(sorted_subjects, subjects[probes], side="right")
    chunk_size = int(np.clip(SCORE_ELEMENTS // max(n_faces, 1), 1, PROBE_CHUNK))
    impostor = np.empty(probes.size, dtype=np.float64)
    genuine = np.full(probes.size, np.inf, dtype=np.float64)
    for start in range(0, probes.size, chunk_size):
        chunk = probes[start : start + chunk_size]
        sims = vectors[chunk] @ vectors.T  # (chunk, N) cosine
        for row, probe in enumerate(chunk):
            own = order[starts[start + row] : ends[start + row]]
            others_of_own = own[own != probe]
            if others_of_own.size:
                best_own = float(sims[row, others_of_own].max())
                genuine[start + row] = squared_distance(best_own)
            sims[row, own] = -2.0  # the probe's own subject is not in the stranger's gallery
        impostor[start : start + chunk.size] = squared_distances(sims.max(axis=1))
    return ProbeDistances(impostor, genuine)


def operating_point(distances: ProbeDistances, threshold: float) -> OperatingPoint:
    fpir = float((distances.impostor_best <= threshold).mean())
    has_genuine = np.isfinite(distances.genuine_best)
    if not has_genuine.any():
        return OperatingPoint(threshold, fpir, None)
    genuine = distances.genuine_best[has_genuine]
    rivals = distances.impostor_best[has_genuine]
    accepted = (genuine <= threshold) & (genuine < rivals)
    return OperatingPoint(threshold, fpir, float(accepted.mean()))


def calibrate(
    vectors: NDArray[np.float32],
    subjects: NDArray[np.int64],
    *,
    target_fpir: float,
    current_threshold: float,
    max_probes: int = MAX_PROBES,
    verify_threshold: float = 4.0,
) -> Calibration:
    """The threshold giving ``target_fpir`` against this gallery, and both operating points.

    ``vectors`` are the collection's unit embeddings, ``subjects`` the owning subject of each row.
    The recommendation is never looser than ``verify_threshold`` and withheld on too little data.
    """
    started = time.perf_counter()
    if not 0.0 < target_fpir < 1.0:
        raise ValueError("target_fpir must lie in (0, 1)")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    subjects = np.asarray(subjects, dtype=np.int64)
    if vectors.ndim != 2 or vectors.shape[0] != subjects.size:
        raise ValueError("vectors must be (N, D) with one subject per row")
    n_faces = int(subjects.size)
    people, counts = np.unique(subjects, return_counts=True)
    if people.size < 2:
        raise CalibrationNotPossible(
            f"Calibration needs faces of at least 2 subjects; this collection has {people.size}.",
            subjects=int(people.size),
            faces=n_faces,
        )
    sampled = n_faces > max_probes
    if sampled:
        rng = np.random.default_rng(SAMPLE_SEED)
        probes = np.sort(rng.choice(n_faces, size=max_probes, replace=False)).astype(np.int64)
    else:
        probes = np.arange(n_faces, dtype=np.int64)
    distances = probe_distances(vectors, subjects, probes)
    recommended = threshold_at_fpir(distances.impostor_best, target_fpir)
    n_genuine = int(np.isfinite(distances.genuine_best).sum())
    several = int((counts >= 2).sum())

    warnings: list[str] = []
    if people.size < MIN_SUBJECTS:
        warnings.append(
            f"Only {people.size} subjects: strangers are simulated by the enrolled people themselves, "
            f"so the estimate is rough below {MIN_SUBJECTS} subjects."
        )
    expected = target_fpir * probes.size
    if expected < MIN_EXPECTED_FALSE_ACCEPTS:
        needed = math.ceil(MIN_EXPECTED_FALSE_ACCEPTS / target_fpir)
        warnings.append(
            f"The target FPIR {target_fpir:g} over {probes.size} stranger probes allows only "
            f"{math.floor(expected + 1e-9)} false matches: the threshold rests on a handful of "
            f"distances (at least {needed} faces are needed for a stable estimate at this target)."
        )
    if several == 0:
        warnings.append("No subject has two or more faces: the genuine accept rate cannot be estimated.")
    withheld: list[WithheldReason] = [TOO_FEW_SUBJECTS] if people.size < MIN_SUBJECTS else []
    if probes.size * target_fpir < 1.0:
        withheld.append(TOO_FEW_FACES)
    capped = not withheld and recommended > verify_threshold
    recommendation = None if withheld else operating_point(distances, min(recommended, verify_threshold))
    return Calibration(
        target_fpir=target_fpir,
        current=operating_point(distances, current_threshold),
        recommended=operating_point(distances, recommended),
        subjects=int(people.size),
        faces=n_faces,
        impostor_probes=int(probes.size),
        genuine_probes=n_genuine,
        subjects_with_several_faces=several,
        sampled=sampled,
        seconds=time.perf_counter() - started,
        warnings=warnings,
        recommendation=recommendation,
        withheld=withheld,
        capped=capped,
    )


def withheld_detail(result: Calibration) -> str:
    """Why ``result`` offers no recommendation, in words (empty when it does)."""
    reasons = []
    if TOO_FEW_FACES in result.withheld:
        reasons.append(
            f"{result.impostor_probes} faces cannot measure a false-positive identification rate of "
            f"{result.target_fpir:g} (at least {math.ceil(1.0 / result.target_fpir)} are needed)"
        )
    if TOO_FEW_SUBJECTS in result.withheld:
        reasons.append(
            f"{result.subjects} subjects are too few to stand in for strangers (at least {MIN_SUBJECTS} "
            "are needed)"
        )
    return "; ".join(reasons)


class CalibrationSlot:
    """One calibration at a time per process (it reads every embedding and keeps the cores busy for
    seconds at 100k faces); a concurrent request is refused with ``CalibrationBusy`` instead of
    queueing behind it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise CalibrationBusy("Another calibration is running; try again when it has finished.")
        try:
            yield
        finally:
            self._lock.release()


@dataclass(frozen=True, slots=True)
class CollectionCalibration:
    collection: str
    result: Calibration
    before: ThresholdInForce  # the identify threshold in force when the calibration ran
    after: ThresholdInForce  # the one in force now (the recommended one when applied)
    applied: bool


def load_embeddings(gallery: Gallery, collection_pk: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Every embedding of a collection with its owning subject, straight from the store."""
    subject_parts: list[NDArray[np.int64]] = []
    vector_parts: list[NDArray[np.float32]] = []
    for subjects, vectors in gallery.iter_subject_embeddings(collection_pk):
        subject_parts.append(subjects)
        vector_parts.append(vectors)
    if not vector_parts:
        return np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.int64)
    return np.ascontiguousarray(np.concatenate(vector_parts)), np.concatenate(subject_parts)


def calibrate_collection(
    gallery: Gallery,
    thresholds: ThresholdPolicy,
    slot: CalibrationSlot,
    collection: str,
    *,
    target_fpir: float,
    apply: bool,
) -> CollectionCalibration:
    """Calibrate ``collection`` from its own faces; with ``apply`` store the result as its threshold."""
    with slot.hold():
        record = gallery.get_collection(collection)
        before = thresholds.for_collection(record.own_threshold, record.subject_count, record.face_count)
        vectors, subjects = load_embeddings(gallery, record.pk)
        result = calibrate(
            vectors,
            subjects,
            target_fpir=target_fpir,
            current_threshold=before.value,
            verify_threshold=thresholds.verify_default.value,
        )
        after = before
        if apply and result.recommendation is None:
            raise CalibrationNotPossible(
                f"Not applied: {withheld_detail(result)}; enroll more faces and people, or choose a "
                "larger target_fpir.",
                faces=result.faces,
                subjects=result.subjects,
                withheld=result.withheld,
            )
        if apply and result.recommendation is not None:
            updated = gallery.update_collection(
                collection,
                {"identify_threshold": round(result.recommendation.threshold, 6)},
                threshold_source="calibration",
            )
            after = thresholds.for_collection(
                updated.own_threshold, updated.subject_count, updated.face_count
            )
            logger.info(
                "collection %s: identify threshold %.4f applied by calibration (target FPIR %g, %d faces)",
                collection,
                after.value,
                target_fpir,
                result.faces,
            )
        return CollectionCalibration(collection, result, before, after, apply)
