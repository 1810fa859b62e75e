"""Identity folders → aligned 112×112 crops (cached on disk once) → P×K batches.

Faces are aligned exactly as the service aligns them (YuNet landmarks → ArcFace 5-point similarity
warp) and chosen as ``models.evaluate_lfw`` chooses them in LFW images: the detected face nearest
the image centre, a low-threshold retry, and otherwise nothing (training drops such images; the
evaluation aligns them on the median landmarks, as evaluate_lfw does).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from models.evaluate_lfw import FALLBACK_SCORE, choose_face
from service.runtime.alignment import align_face
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.detector import YuNetDetector, load_detector
from service.runtime.imaging import decode_image
from service.runtime.quality import QualityConfig
from service.runtime.types import RGBImage

logger = logging.getLogger(__name__)

CROP_SIZE = (112, 112)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
MAX_PIXELS = 40_000_000
NO_FACE = "none"


def images_root(data_root: Path) -> Path:
    """LFW keeps its identity folders under ``images/``; generic datasets have them at the root."""
    nested = data_root / "images"
    return nested if nested.is_dir() else data_root


def scan_identities(root: Path, exclude: Iterable[str] = ()) -> dict[str, list[Path]]:
    """Identity folder name → its image files, both sorted; excluded identities are left out."""
    excluded = set(exclude)
    identities: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in excluded:
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if files:
            identities[folder.name] = files
    return identities


def read_image(path: Path) -> RGBImage:
    return decode_image(path.read_bytes(), max_pixels=MAX_PIXELS)


@dataclass(frozen=True, slots=True)
class AlignedFace:
    crop: NDArray[np.uint8] | None  # (112, 112, 3) RGB; None when no face was found
    landmarks: NDArray[np.float32] | None
    method: str


class FaceAligner(Protocol):
    @property
    def signature(self) -> str:
        """Everything that changes the crops; the cache is keyed by it."""
        ...

    def align(self, image: RGBImage) -> AlignedFace: ...


class YuNetAligner:
    """The service's detector and aligner with evaluate_lfw's choice of face."""

    def __init__(
        self, detector_model: Path, threads: int = 0, score_threshold: float = 0.6, max_side: int = 640
    ) -> None:
        detector = load_detector(detector_model, "auto", threads, score_threshold, max_side)
        self._fallback = YuNetDetector(detector.session, score_threshold=FALLBACK_SCORE, max_side=max_side)
        self._analyzer = FaceAnalyzer(detector, CROP_SIZE, QualityConfig())
        digest = hashlib.sha256(detector_model.read_bytes()).hexdigest()[:16]
        self._signature = f"yunet-{digest}-s{score_threshold}-m{max_side}-centre_face-v1"

    @property
    def signature(self) -> str:
        return self._signature

    def align(self, image: RGBImage) -> AlignedFace:
        choice = choose_face(image, self._analyzer, self._fallback)
        if choice.landmarks is None:
            return AlignedFace(None, None, NO_FACE)
        return AlignedFace(align_face(image, choice.landmarks, CROP_SIZE), choice.landmarks, choice.method)


class PrealignedAligner:
    """For datasets that already hold aligned crops: resize to 112×112, landmarks on the template."""

    signature = "prealigned-v1"

    def align(self, image: RGBImage) -> AlignedFace:
        crop = (
            image
            if image.shape[:2] == CROP_SIZE[::-1]
            else cv2.resize(image, CROP_SIZE, interpolation=cv2.INTER_AREA)
        )
        return AlignedFace(np.ascontiguousarray(crop, dtype=np.uint8), None, "prealigned")


# A cached image: its aligned crop and landmarks, either None when no face was found.
ShardEntry = tuple[NDArray[np.uint8] | None, NDArray[np.float32] | None]


@dataclass(frozen=True)
class CropSet:
    """Aligned crops of a list of images, in the order asked for."""

    paths: list[Path]
    crops: NDArray[np.uint8]  # (N, 112, 112, 3) RGB; zeros where no face was found
    found: NDArray[np.bool_]
    landmarks: NDArray[np.float32]  # (N, 5, 2); NaN where unknown


class CropCache:
    """Per-identity ``.npz`` shards under ``cache_dir/<aligner signature>/``, keyed by file name.

    Computing crops once matters: detection dominates a CPU epoch, and every run and evaluation of
    the same images reuses them. Images that change on disk need a fresh cache folder.
    """

    def __init__(self, cache_dir: Path, aligner: FaceAligner) -> None:
        self.aligner = aligner
        self.folder = cache_dir / aligner.signature

    def load(self, paths: Sequence[Path], progress: bool = True, desc: str = "align") -> CropSet:
        by_identity: dict[str, list[Path]] = {}
        for path in paths:
            by_identity.setdefault(path.parent.name, []).append(path)
        shards = {identity: self._read_shard(identity) for identity in by_identity}
        todo = {
            identity: missing
            for identity, identity_paths in by_identity.items()
            if (missing := [p for p in identity_paths if p.name not in shards[identity]])
        }
        if todo:
            self.folder.mkdir(parents=True, exist_ok=True)
            total = sum(len(missing) for missing in todo.values())
            with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
                for identity, missing in todo.items():
                    for path in missing:
                        face = self.aligner.align(read_image(path))
                        shards[identity][path.name] = (face.crop, face.landmarks)
                        bar.update()
                    # One shard per identity as soon as it is complete: an interrupted run keeps its work.
                    self._write_shard(identity, shards[identity])
        crops = np.zeros((len(paths), CROP_SIZE[1], CROP_SIZE[0], 3), dtype=np.uint8)
        found = np.zeros(len(paths), dtype=np.bool_)
        landmarks = np.full((len(paths), 5, 2), np.nan, dtype=np.float32)
        for index, path in enumerate(paths):
            crop, points = shards[path.parent.name][path.name]
            if crop is not None:
                crops[index] = crop
                found[index] = True
            if points is not None:
                landmarks[index] = points
        return CropSet(list(paths), crops, found, landmarks)

    def _shard_path(self, identity: str) -> Path:
        return self.folder / f"{identity}.npz"

    def _read_shard(self, identity: str) -> dict[str, ShardEntry]:
        path = self._shard_path(identity)
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as shard:
            names = [str(n) for n in shard["names"]]
            crops, found, landmarks = shard["crops"], shard["found"], shard["landmarks"]
        return {
            name: (
                crops[i] if found[i] else None,
                landmarks[i] if not np.isnan(landmarks[i]).any() else None,
            )
            for i, name in enumerate(names)
        }

    def _write_shard(self, identity: str, entries: dict[str, ShardEntry]) -> None:
        names = sorted(entries)
        crops = np.zeros((len(names), CROP_SIZE[1], CROP_SIZE[0], 3), dtype=np.uint8)
        landmarks = np.full((len(names), 5, 2), np.nan, dtype=np.float32)
        found = np.zeros(len(names), dtype=np.bool_)
        for i, name in enumerate(names):
            crop, points = entries[name]
            if crop is not None:
                crops[i], found[i] = crop, True
            if points is not None:
                landmarks[i] = points
        tmp = self._shard_path(identity).with_suffix(".tmp.npz")
        np.savez_compressed(tmp, names=np.array(names), crops=crops, found=found, landmarks=landmarks)
        tmp.replace(self._shard_path(identity))


def fill_missing_with_median(crops: CropSet) -> int:
    """Align faceless images on the median landmarks of the rest (evaluate_lfw's last resort); how many."""
    missing = np.nonzero(~crops.found)[0]
    known = ~np.isnan(crops.landmarks).any(axis=(1, 2))
    if missing.size == 0:
        return 0
    if not known.any():
        raise RuntimeError("no face was detected in any image; cannot align the rest")
    median = np.median(crops.landmarks[known], axis=0).astype(np.float32)
    for index in missing:
        crops.crops[index] = align_face(read_image(crops.paths[index]), median, CROP_SIZE)
    return int(missing.size)


def build_aligner(kind: str, detector_model: Path, threads: int) -> FaceAligner:
    if kind == "prealigned":
        return PrealignedAligner()
    return YuNetAligner(detector_model, threads=threads)


@dataclass(frozen=True)
class TrainingSet:
    """Aligned crops and integer labels of the identities that survived filtering."""

    crops: NDArray[np.uint8]  # (N, 112, 112, 3)
    labels: NDArray[np.int64]  # (N,) in [0, len(identities))
    identities: list[str]
    paths: list[Path]
    excluded_identities: int

    def summary(self) -> dict[str, object]:
        return {
            "identities": len(self.identities),
            "images": int(self.labels.shape[0]),
            "excluded_identities": self.excluded_identities,
            "identities_sha256": hashlib.sha256(json.dumps(self.identities).encode()).hexdigest(),
        }


def load_training_set(
    root: Path,
    cache: CropCache,
    min_images: int,
    exclude: set[str],
    max_identities: int | None = None,
    max_images: int | None = None,
    progress: bool = True,
) -> TrainingSet:
    """Identities with at least ``min_images`` files (then faces), minus ``exclude``."""
    identities = scan_identities(root)
    excluded = len(set(identities) & exclude)
    candidates = {name: files for name, files in identities.items() if name not in exclude}
    candidates = {name: files for name, files in candidates.items() if len(files) >= min_images}
    names = sorted(candidates)[:max_identities] if max_identities is not None else sorted(candidates)
    paths = [path for name in names for path in candidates[name][:max_images]]
    crop_set = cache.load(paths, progress=progress, desc="align training images")
    rows_of: dict[str, list[int]] = {}
    for row, path in enumerate(paths):
        if crop_set.found[row]:
            rows_of.setdefault(path.parent.name, []).append(row)
    kept_names = [name for name in names if len(rows_of.get(name, [])) >= min_images]
    kept_rows = [row for name in kept_names for row in rows_of[name]]
    kept_labels = [label for label, name in enumerate(kept_names) for _ in rows_of[name]]
    kept_paths = [paths[row] for row in kept_rows]
    if len(kept_names) < 2:
        raise ValueError(f"only {len(kept_names)} usable identities under {root}; need at least 2")
    logger.info(
        "training set: %d identities, %d images (%d excluded identities)",
        len(kept_names),
        len(kept_rows),
        excluded,
    )
    return TrainingSet(
        crops=np.ascontiguousarray(crop_set.crops[kept_rows]),
        labels=np.asarray(kept_labels, dtype=np.int64),
        identities=kept_names,
        paths=kept_paths,
        excluded_identities=excluded,
    )


class PKBatchSampler:
    """P identities × K images per batch, a pure function of the step (so resuming repeats nothing).

    Identities are visited in a fresh random order every pass; an identity with fewer than K images
    uses all of them and repeats some (augmentation makes the copies differ).
    """

    def __init__(
        self, labels: NDArray[np.int64], identities_per_batch: int, images_per_identity: int, seed: int
    ) -> None:
        self.p = identities_per_batch
        self.k = images_per_identity
        self.seed = seed
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        self.members = np.split(order, bounds)
        if len(self.members) < self.p:
            raise ValueError(f"{len(self.members)} identities cannot fill P={self.p} per batch")
        self.batches_per_pass = len(self.members) // self.p

    def batch(self, step: int) -> NDArray[np.int64]:
        passes, index = divmod(step, self.batches_per_pass)
        order = np.random.default_rng([self.seed, passes]).permutation(len(self.members))
        chosen = order[index * self.p : (index + 1) * self.p]
        rng = np.random.default_rng([self.seed, passes, index])
        return np.concatenate([self._pick(self.members[i], rng) for i in chosen]).astype(np.int64)

    def _pick(self, members: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
        if len(members) >= self.k:
            return rng.choice(members, size=self.k, replace=False)
        # Too few images: every one of them, topped up with random repeats.
        return np.concatenate([members, rng.choice(members, size=self.k - len(members))])
