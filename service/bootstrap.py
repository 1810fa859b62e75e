"""Wiring: builds the long-lived objects from Settings (once, in the app lifespan)."""

from __future__ import annotations

import logging

from service.domain.calibration import CalibrationSlot
from service.domain.faces import FaceEngine
from service.domain.gallery import Gallery
from service.domain.idempotency import IdempotencyKeys
from service.domain.services import Services
from service.domain.thresholds import ThresholdPolicy
from service.index.base import VectorIndex
from service.index.compressed_index import CompressedParams
from service.index.faiss_index import IndexRegistry
from service.observability import Metrics
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.batcher import EmbeddingBatcher
from service.runtime.embedder import OnnxEmbedder, load_detector, load_embedder
from service.runtime.glibc import heap_trimmer
from service.runtime.lanes import AnalyzerSpec, ImageLanes
from service.runtime.model_card import ModelCard
from service.runtime.onnx_session import active_provider
from service.runtime.quality import QualityConfig
from service.settings import Settings
from service.storage.store import FaceStore
from service.storage.subject_repair import MetadataBounds

logger = logging.getLogger(__name__)


def load_face_models(settings: Settings) -> tuple[OnnxEmbedder, ModelCard, FaceAnalyzer]:
    """The embedder, its card and the detect-align-grade front end, as configured."""
    model = settings.model
    embedder, card = load_embedder(
        model.model_dir,
        model.embedder_card,
        model.execution_provider,
        model.intra_op_threads,
        model.cpu_graph_rewrites,
    )
    detector = load_detector(
        model.detector_path,
        model.execution_provider,
        model.intra_op_threads,
        settings.detector_score_threshold,
        settings.detection_max_side,
        cpu_graph_rewrites=model.cpu_graph_rewrites,
    )
    analyzer = FaceAnalyzer(
        detector,
        embedder.alignments,  # one crop per model input, aligned as the card says
        QualityConfig(
            min_face_size_px=settings.min_face_size_px,
            min_detector_score=settings.min_detector_score,
            min_sharpness=settings.min_sharpness,
        ),
        detection_side=settings.detection_max_side,
    )
    return embedder, card, analyzer


def large_image_spec(settings: Settings, analyzer: FaceAnalyzer) -> AnalyzerSpec:
    """The same front end as ``analyzer``, rebuilt in the large-image worker process."""
    return AnalyzerSpec(
        detector_path=settings.model.detector_path,
        score_threshold=settings.detector_score_threshold,
        detection_side=settings.detection_max_side,
        alignments=analyzer.alignments,
        quality=analyzer.quality,
        cpu_graph_rewrites=settings.model.cpu_graph_rewrites,
    )


def build_vector_index(settings: Settings, store: FaceStore, dim: int) -> VectorIndex:
    """The configured engine: embedded FAISS (default) or Milvus (``FACES_VECTOR_BACKEND=milvus``)."""
    if settings.vector_backend == "milvus":
        # Imported only when chosen: pymilvus is the optional ``[milvus]`` extra.
        from service.index.milvus_index import MilvusIndex

        return MilvusIndex.from_settings(store.faces, dim, settings.milvus)
    return IndexRegistry(
        store.faces,
        dim,
        settings.index_dir,
        use_gpu=settings.use_gpu_index,
        search_threads=settings.search_threads,
        min_block=settings.search_min_block,
        block_threads=settings.search_block_threads,
        compressed_min_faces=settings.compressed_index_min_faces,
        compressed=CompressedParams(
            codec=settings.compressed_index_codec,
            nlist=settings.compressed_index_nlist,
            nprobe=settings.compressed_index_nprobe,
            rerank=settings.compressed_index_rerank,
            shards=settings.compressed_index_shards,
        ),
    )


def build_services(settings: Settings, metrics: Metrics) -> Services:
    embedder, card, analyzer = load_face_models(settings)
    provider = active_provider(embedder.session)
    logger.info("embedding model %s (%d-d) on %s", card.name, card.embedding_dim, provider)
    batcher = EmbeddingBatcher(
        embedder,
        enabled=settings.batching_enabled,
        max_batch=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
        on_batch=metrics.record_batch,
    )
    thresholds = ThresholdPolicy.build(
        card,
        verify_override=settings.default_threshold,
        identify_override=settings.default_identify_threshold,
    )
    engine = FaceEngine(
        analyzer,
        batcher,
        max_image_pixels=settings.max_image_pixels,
        max_request_pixels=settings.max_request_pixels,
        lanes=ImageLanes(
            analyzer,
            large_spec=large_image_spec(settings, analyzer),
            large_image_pixels=settings.large_image_pixels,
            queue_pixels=settings.large_image_queue_pixels,
            trim=heap_trimmer(),
        ),
        on_faces=metrics.faces_detected.inc,
    )
    store = FaceStore.from_url(
        settings.database_url,
        metadata_bounds=MetadataBounds(settings.max_metadata_depth, settings.max_metadata_bytes),
    )
    indexes = build_vector_index(settings, store, card.embedding_dim)
    indexes.load_all([c.pk for c in store.collections.list_collections()])
    gallery = Gallery(store, indexes)
    metrics.watch_index(gallery.index_sizes_by_name)
    logger.info(
        "default thresholds (squared L2): verify %.4f (%s), identify %s; store %s",
        thresholds.verify_default.value,
        thresholds.verify_default.source,
        thresholds.describe_identify_default(),
        store.dialect,
    )
    return Services(
        settings=settings,
        gallery=gallery,
        engine=engine,
        card=card,
        metrics=metrics,
        provider=provider,
        thresholds=thresholds,
        calibration=CalibrationSlot(),
        idempotency=IdempotencyKeys(
            store.idempotency,
            ttl_s=settings.idempotency_key_ttl_s,
            in_flight_timeout_s=settings.idempotency_in_flight_timeout_s,
        ),
    )
