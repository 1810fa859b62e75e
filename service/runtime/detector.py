"""YuNet face detection under onnxruntime: multi-stride decoding and NMS in numpy; no cv2.dnn when serving."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from service.runtime.alignment import template_for
from service.runtime.onnx_session import ExecutionProvider, create_session
from service.runtime.types import DetectedFace, RGBImage

logger = logging.getLogger(__name__)

YUNET_STRIDES = (8, 16, 32)
# YuNet's feature maps halve five times; the padded input must divide by the largest stride.
YUNET_ALIGN = 32


def nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou_threshold: float) -> NDArray[np.int64]:
    """Greedy non-maximum suppression over (x, y, w, h) boxes; indices kept, best score first."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    x1 = boxes[:, 0]
    y1 = boxes[:, 1]
    x2 = boxes[:, 0] + boxes[:, 2]
    y2 = boxes[:, 1] + boxes[:, 3]
    areas = np.maximum(boxes[:, 2], 0) * np.maximum(boxes[:, 3], 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = inter_w * inter_h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class YuNetDetector:
    """FaceDetector over the YuNet 2023mar ONNX (input: BGR 0..255 NCHW, any size divisible by 32).

    Detection runs on a copy whose longer side is at most ``max_side``; boxes and landmarks are
    returned in the caller's full-resolution coordinates so alignment can use every pixel.
    ``min_side`` (0: off) upscales small images first so their shorter side reaches it (never past
    ``max_side``): YuNet places landmarks more precisely on faces that are not tiny.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        top_k: int = 5000,
        min_side: int = 0,
    ) -> None:
        if max_side < YUNET_ALIGN:
            raise ValueError(f"max_side must be at least {YUNET_ALIGN}")
        if min_side < 0:
            raise ValueError("min_side must be 0 (off) or positive")
        self._session = session
        self._input_name: str = session.get_inputs()[0].name
        outputs = [o.name for o in session.get_outputs()]
        self._output_names = [
            f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in YUNET_STRIDES
        ]
        missing = set(self._output_names) - set(outputs)
        if missing:
            raise ValueError(f"not a YuNet model: outputs {sorted(missing)} are missing")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.min_side = min_side
        self.top_k = top_k

    @property
    def session(self) -> ort.InferenceSession:
        return self._session

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        """All faces scoring at least ``score_threshold``, largest box first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"expected an (H, W, 3) RGB image, got {image.shape}")
        height, width = image.shape[:2]
        scale = self.detection_scale(width, height)
        small_w = max(1, round(width * scale))
        small_h = max(1, round(height * scale))
        small: RGBImage = image
        if (small_w, small_h) != (width, height):
            interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
            small = np.asarray(
                cv2.resize(image, (small_w, small_h), interpolation=interpolation), dtype=np.uint8
            )
        blob, pad_h, pad_w = self._blob(small)
        outputs = self._session.run(self._output_names, {self._input_name: blob})
        boxes, landmarks, scores = self._decode(outputs, pad_h, pad_w)
        if scores.size == 0:
            return []
        if scores.size > self.top_k:
            best = np.argsort(-scores, kind="stable")[: self.top_k]
            boxes, landmarks, scores = boxes[best], landmarks[best], scores[best]
        keep = nms(boxes, scores, self.nms_threshold)
        factor = np.array([width / small_w, height / small_h], dtype=np.float32)
        faces: list[DetectedFace] = []
        for index in keep:
            x, y, w, h = (boxes[index].reshape(2, 2) * factor).reshape(-1).tolist()
            points = np.ascontiguousarray(landmarks[index] * factor, dtype=np.float32)
            faces.append(DetectedFace(box=(x, y, w, h), score=float(scores[index]), landmarks=points))
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces

    def detection_scale(self, width: int, height: int) -> float:
        """Factor from the caller's image to the copy the network sees."""
        longest = self.max_side / max(height, width)
        if self.min_side > 0 and min(height, width) < self.min_side:
            return min(self.min_side / min(height, width), longest)
        return min(1.0, longest)

    @staticmethod
    def _blob(small: RGBImage) -> tuple[NDArray[np.float32], int, int]:
        height, width = small.shape[:2]
        pad_h = -(-height // YUNET_ALIGN) * YUNET_ALIGN
        pad_w = -(-width // YUNET_ALIGN) * YUNET_ALIGN
        blob = np.zeros((1, 3, pad_h, pad_w), dtype=np.float32)
        # RGB → BGR planes, bottom/right zero padding like OpenCV's FaceDetectorYN.
        blob[0, :, :height, :width] = small[:, :, ::-1].transpose(2, 0, 1)
        return blob, pad_h, pad_w

    def _decode(
        self, outputs: list[NDArray[np.float32]], pad_h: int, pad_w: int
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Anchor-free heads → (x, y, w, h) boxes, (5, 2) landmarks and scores in padded-input pixels."""
        count = len(YUNET_STRIDES)
        all_boxes: list[NDArray[np.float32]] = []
        all_points: list[NDArray[np.float32]] = []
        all_scores: list[NDArray[np.float32]] = []
        for level, stride in enumerate(YUNET_STRIDES):
            cls = outputs[level].reshape(-1)
            obj = outputs[count + level].reshape(-1)
            scores = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
            hit = np.nonzero(scores >= self.score_threshold)[0]
            if hit.size == 0:
                continue
            bbox = outputs[2 * count + level].reshape(-1, 4)[hit]
            kps = outputs[3 * count + level].reshape(-1, 5, 2)[hit]
            cols = pad_w // stride
            anchor = np.stack([hit % cols, hit // cols], axis=1).astype(np.float32)
            centre = (anchor + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:4]) * stride
            all_boxes.append(np.concatenate([centre - size / 2, size], axis=1).astype(np.float32))
            all_points.append(((kps + anchor[:, None, :]) * stride).astype(np.float32))
            all_scores.append(scores[hit].astype(np.float32))
        if not all_scores:
            return (
                np.zeros((0, 4), np.float32),
                np.zeros((0, 5, 2), np.float32),
                np.zeros((0,), np.float32),
            )
        return np.concatenate(all_boxes), np.concatenate(all_points), np.concatenate(all_scores)


class AlignedCropDetector:
    """For inputs that already are aligned crops: the whole image is the face, landmarks on the template."""

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        height, width = image.shape[:2]
        landmarks = template_for((width, height))
        return [DetectedFace(box=(0.0, 0.0, float(width), float(height)), score=1.0, landmarks=landmarks)]


def load_detector(
    path: Path,
    provider: ExecutionProvider,
    intra_op_threads: int,
    score_threshold: float,
    max_side: int,
    nms_threshold: float = 0.3,
    min_side: int = 0,
    cpu_graph_rewrites: bool = True,
) -> YuNetDetector:
    """The YuNet detector on the best available provider."""
    session = create_session(path, provider, intra_op_threads, cpu_graph_rewrites)
    return YuNetDetector(
        session,
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
        max_side=max_side,
        min_side=min_side,
    )
