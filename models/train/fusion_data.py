"""Precomputed LFW embeddings for training the fused projection: one face per image, embedded once.

    python -m models.train.fusion_data landmarks --out runs/fusion          # YuNet, all LFW images
    python -m models.train.fusion_data embed --backbone sface --out runs/fusion
    python -m models.train.fusion_data embed --backbone dlib --model-dir models/artifacts/dlib_resnet_v1 \
        --out runs/fusion

The face of every image is chosen exactly as ``models.evaluate_lfw`` chooses it (detected face nearest
the image centre; a low-threshold retry; the median landmarks as last resort), and its five landmarks
are kept, so every backbone embeds the same face, aligned with the template its card names. Each image
is embedded twice: the aligned crop and its horizontal mirror (training augmentation, and test-time
flip averaging).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from models.evaluate_lfw import DEFAULT_LFW_DIR, FALLBACK_SCORE, MAX_PIXELS, choose_face, file_digest
from models.lfw import save_npz_atomic
from service.runtime.alignment import get_alignment
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.detector import YuNetDetector, load_detector
from service.runtime.embedder import OnnxEmbedder, load_embedder
from service.runtime.imaging import decode_image
from service.runtime.quality import QualityConfig

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LANDMARKS_FILE = "landmarks.npz"

Aligner = Callable[[NDArray[np.uint8], NDArray[np.float32], tuple[int, int]], NDArray[np.uint8]]


@dataclass(frozen=True)
class LfwFaces:
    """Every LFW image (sorted relative names), its person, and the five landmarks of its chosen face."""

    names: list[str]
    people: list[str]
    landmarks: NDArray[np.float32]  # (N, 5, 2) full-resolution image coordinates
    methods: list[str]


@dataclass(frozen=True)
class BackboneEmbeddings:
    names: list[str]
    plain: NDArray[np.float32]  # (N, D) unit vectors of the aligned crops
    flipped: NDArray[np.float32]  # (N, D) unit vectors of the mirrored crops


def lfw_image_names(images_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(images_dir)) for p in images_dir.glob("*/*.jpg"))


def person_of(name: str) -> str:
    return name.split("/", 1)[0]


def detect_landmarks(
    images_dir: Path, names: list[str], detector: YuNetDetector, crop_size: tuple[int, int]
) -> LfwFaces:
    fallback = YuNetDetector(
        detector.session,
        score_threshold=FALLBACK_SCORE,
        max_side=detector.max_side,
        min_side=detector.min_side,
    )
    analyzer = FaceAnalyzer(detector, crop_size, QualityConfig())
    landmarks: list[NDArray[np.float32] | None] = []
    methods: list[str] = []
    for name in tqdm(names, desc="detect", unit="img"):
        image = decode_image((images_dir / name).read_bytes(), max_pixels=MAX_PIXELS)
        choice = choose_face(image, analyzer, fallback)
        landmarks.append(choice.landmarks)
        methods.append(choice.method)
    found = [lm for lm in landmarks if lm is not None]
    if not found:
        raise RuntimeError("no face detected in any image")
    median = np.median(np.stack(found), axis=0).astype(np.float32)
    stacked = np.stack([median if lm is None else lm for lm in landmarks]).astype(np.float32)
    return LfwFaces(names, [person_of(n) for n in names], stacked, methods)


def save_faces(path: Path, faces: LfwFaces, key: str) -> None:
    save_npz_atomic(
        path,
        key=np.array(key),
        names=np.array(faces.names),
        landmarks=faces.landmarks,
        methods=np.array(faces.methods),
    )


def load_faces(path: Path) -> LfwFaces:
    with np.load(path, allow_pickle=False) as data:
        names = [str(n) for n in data["names"]]
        return LfwFaces(
            names,
            [person_of(n) for n in names],
            data["landmarks"].astype(np.float32),
            [str(m) for m in data["methods"]],
        )


def embed_faces(
    images_dir: Path,
    faces: LfwFaces,
    embedder: OnnxEmbedder,
    align: Aligner,
    batch_size: int,
) -> BackboneEmbeddings:
    """Align every chosen face with ``align`` and embed the crop and its mirror, streaming in batches."""
    plain: list[NDArray[np.float32]] = []
    flipped: list[NDArray[np.float32]] = []
    pending: list[NDArray[np.uint8]] = []

    def flush() -> None:
        if pending:
            crops = np.stack(pending)
            plain.append(embedder.embed(crops))
            flipped.append(embedder.embed(np.ascontiguousarray(crops[:, :, ::-1])))
            pending.clear()

    for name, landmarks in tqdm(
        zip(faces.names, faces.landmarks, strict=True), total=len(faces.names), desc="embed", unit="img"
    ):
        image = decode_image((images_dir / name).read_bytes(), max_pixels=MAX_PIXELS)
        pending.append(align(image, landmarks, embedder.input_size))
        if len(pending) >= batch_size:
            flush()
    flush()
    return BackboneEmbeddings(faces.names, np.concatenate(plain), np.concatenate(flipped))


def save_embeddings(path: Path, embeddings: BackboneEmbeddings, key: str) -> None:
    save_npz_atomic(
        path,
        key=np.array(key),
        names=np.array(embeddings.names),
        plain=embeddings.plain,
        flipped=embeddings.flipped,
    )


def load_embeddings(path: Path) -> BackboneEmbeddings:
    with np.load(path, allow_pickle=False) as data:
        return BackboneEmbeddings(
            [str(n) for n in data["names"]],
            data["plain"].astype(np.float32),
            data["flipped"].astype(np.float32),
        )


def aligner_for(template: str) -> Aligner:
    """The service's alignment for a card's template name (the named templates live in the service)."""
    alignment = get_alignment(template)

    def align(
        image: NDArray[np.uint8], landmarks: NDArray[np.float32], size: tuple[int, int]
    ) -> NDArray[np.uint8]:
        return alignment.align(image, landmarks, size)

    return align


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["landmarks", "embed"])
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_DIR)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "fusion")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "artifacts")
    parser.add_argument("--card", default="embedder.json")
    parser.add_argument(
        "--detector", type=Path, default=REPO_ROOT / "models" / "artifacts" / "yunet_2023mar_fp32.onnx"
    )
    parser.add_argument("--backbone", default="sface", help="name of the embeddings file (<name>.npz)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    images_dir = args.lfw_dir / "images"
    landmarks_path = args.out / LANDMARKS_FILE
    if args.stage == "landmarks":
        names = lfw_image_names(images_dir)
        detector = load_detector(args.detector, "cpu", args.threads, 0.6, 640, min_side=0)
        faces = detect_landmarks(images_dir, names, detector, (112, 112))
        key = json.dumps({"detector": file_digest(args.detector), "method": "evaluate_lfw v1"})
        save_faces(landmarks_path, faces, key)
        counts = {m: faces.methods.count(m) for m in sorted(set(faces.methods))}
        print(f"{len(names)} images, face choice {counts} -> {landmarks_path}")
        return 0
    faces = load_faces(landmarks_path)
    embedder, card = load_embedder(args.model_dir, args.card, "cpu", args.threads)
    alignment = card.model_inputs[0].alignment
    embeddings = embed_faces(images_dir, faces, embedder, aligner_for(alignment), args.batch_size)
    key = json.dumps({"model": file_digest(args.model_dir / card.onnx_file), "alignment": alignment})
    out = args.out / f"{args.backbone}.npz"
    save_embeddings(out, embeddings, key)
    print(f"{len(faces.names)} images × 2 (plain, flipped), {embeddings.plain.shape[1]}-d -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
