"""The long-lived objects a request is served with: built once by ``service.bootstrap`` in the
app lifespan, handed to the routes by ``service.api.deps``."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.calibration import CalibrationSlot
from service.domain.faces import FaceEngine
from service.domain.gallery import Gallery
from service.domain.idempotency import IdempotencyKeys
from service.domain.thresholds import ThresholdPolicy
from service.observability import Metrics
from service.runtime.model_card import ModelCard
from service.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    gallery: Gallery
    engine: FaceEngine
    card: ModelCard
    metrics: Metrics
    provider: str
    thresholds: ThresholdPolicy
    calibration: CalibrationSlot
    idempotency: IdempotencyKeys
