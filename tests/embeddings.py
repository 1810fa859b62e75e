"""Real LFW embeddings for index tests: people with four photos, three enrolled and one probe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from service.runtime.analyzer import FaceAnalyzer
from service.runtime.embedder import load_detector, load_embedder
from service.runtime.imaging import decode_image
from service.runtime.quality import QualityConfig
from service.storage.records import NewFace
from service.storage.store import FaceStore

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "artifacts"


@dataclass(frozen=True)
class LfwGallery:
    enrolled: dict[str, NDArray[np.float32]]  # person → (3, 128) embeddings of photos 1–3
    probes: dict[str, NDArray[np.float32]]  # person → embedding of photo 4


def embed_lfw_people(lfw_root: Path, n_people: int) -> LfwGallery:
    """The first ``n_people`` (alphabetically) with at least four photos, embedded end to end."""
    detector = load_detector(
        MODEL_DIR / "yunet_2023mar_fp32.onnx", "cpu", 1, score_threshold=0.6, max_side=640
    )
    embedder, _ = load_embedder(MODEL_DIR, "embedder.json", "cpu", 1)
    analyzer = FaceAnalyzer(detector, embedder.input_size, QualityConfig())
    enrolled: dict[str, NDArray[np.float32]] = {}
    probes: dict[str, NDArray[np.float32]] = {}
    for person in sorted(p for p in (lfw_root / "images").iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))[:4]
        if len(photos) < 4:
            continue
        crops = []
        for photo in photos:
            faces = analyzer.analyze(decode_image(photo.read_bytes(), max_pixels=40_000_000))
            if faces:
                crops.append(faces[0].crop)
        if len(crops) < 4:
            continue
        vectors = np.asarray(embedder.embed(np.stack(crops)), dtype=np.float32)
        enrolled[person.name], probes[person.name] = vectors[:3], vectors[3]
        if len(enrolled) == n_people:
            break
    return LfwGallery(enrolled, probes)


def enroll_into(store: FaceStore, collection: str, gallery: LfwGallery) -> None:
    for person, vectors in gallery.enrolled.items():
        faces = [NewFace(embedding=v, box=(0.0, 0.0, 1.0, 1.0), quality={}) for v in vectors]
        store.faces.add_faces(collection, person, faces, create_subject=True)


def unit_vectors(n: int, dim: int = 128, seed: int = 0) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(v / np.linalg.norm(v, axis=1, keepdims=True))
