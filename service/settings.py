"""Service configuration: read once at start-up from FACES_* environment variables (or .env).

The variables are flat (``FACES_MILVUS_URI``, ``FACES_MODEL_DIR``, ...); the groups that travel
together are handed out as frozen views built once with the settings: ``settings.milvus`` (the
Milvus connection and vector index) and ``settings.model`` (the model files and how they run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "artifacts"

ExecutionProvider = Literal["auto", "cpu", "cuda"]
MilvusConsistency = Literal["Customized", "Strong", "Bounded", "Session", "Eventually"]
MilvusIndexKind = Literal["FLAT", "HNSW", "IVF_FLAT"]


@dataclass(frozen=True, slots=True)
class MilvusSettings:
    """The ``FACES_MILVUS_*`` group. Its defaults are the only place the Milvus defaults are written:
    ``Settings`` and the Milvus index (``service.index.milvus_*``) take theirs from here."""

    uri: str = "http://127.0.0.1:19530"
    token: str = ""
    db_name: str = ""
    collection: str = "faces"
    search_consistency: MilvusConsistency = "Customized"
    timeout_s: float = 10.0
    index: MilvusIndexKind = "FLAT"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 128
    ivf_nlist: int = 1024
    ivf_nprobe: int = 64


MILVUS_DEFAULTS = MilvusSettings()


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """The model group: where the card and ONNX files are, and how their sessions run."""

    model_dir: Path
    embedder_card: str
    detector_path: Path
    execution_provider: ExecutionProvider
    intra_op_threads: int
    cpu_graph_rewrites: bool


class Settings(BaseSettings):
    """Every tunable of the service; built once in the entry point and injected everywhere else."""

    model_config = SettingsConfigDict(env_prefix="FACES_", env_file=".env", extra="ignore")

    # Storage: SQLite (WAL) by default; any SQLAlchemy URL (postgresql+psycopg://...) otherwise.
    database_url: str = "sqlite:///./data/faces.db"
    # Where FAISS snapshots are written (rebuilt from the store when missing or stale).
    index_dir: Path = Path("./data/index")
    use_gpu_index: bool = True
    # OpenMP threads per FAISS search. One query scans memory-bound: a second thread mostly adds
    # barrier waits while the model uses the cores (bench/results/README_performance.md).
    search_threads: int = Field(default=1, ge=1, le=256)
    # Identify calls on one collection that arrive while a scan runs are answered together by one
    # pass (a matrix product) once this many query rows wait; fewer keep FAISS's per-query scan.
    search_min_block: int = Field(default=3, ge=2, le=4096)
    # Threads one such pass is split over (each its own slabs on one BLAS thread, results merged): the
    # pass is compute-bound and every caller in it is waiting (README "Big collections").
    search_block_threads: int = Field(default=2, ge=1, le=256)
    # A collection with at least this many faces is served by the compressed index (4-bit PQ fast
    # scan of every face, or an IVF over 8-bit codes; candidates re-ranked with the exact vectors:
    # README "Big collections"); 0 = always exact.
    compressed_index_min_faces: int = Field(default=1_000_000, ge=0)
    compressed_index_codec: Literal["PQ4", "SQ8", "fp16"] = "PQ4"
    compressed_index_nlist: int = Field(default=0, ge=0, le=65_536)  # IVF codecs; 0: from the size
    compressed_index_nprobe: int = Field(default=128, ge=1, le=65_536)  # IVF codecs: cells per query
    compressed_index_rerank: int = Field(default=256, ge=1, le=100_000)  # candidates re-ranked exactly
    compressed_index_shards: int = Field(default=2, ge=1, le=64)  # PQ4: scans side by side per query

    # Vector engine: "faiss" (embedded, one index per process, the default) or "milvus" (shared by
    # every API replica; pip install -e ".[milvus]"). The store stays the source of truth for both.
    vector_backend: Literal["faiss", "milvus"] = "faiss"
    # A Milvus server ("http://host:19530"), or a local file path for the in-process milvus-lite.
    milvus_uri: str = MILVUS_DEFAULTS.uri
    milvus_token: str = MILVUS_DEFAULTS.token
    milvus_db: str = MILVUS_DEFAULTS.db_name  # empty: the server's "default" database
    milvus_collection: str = Field(
        default=MILVUS_DEFAULTS.collection, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
    )
    # Identify's read consistency. Customized = as of the last insert any replica acknowledged (its
    # Milvus timestamp is kept in the store): read-your-writes across replicas, waiting only right
    # after a write. Strong = the same guarantee, but every search waits for the next time tick
    # (~proxy.timeTickInterval); Bounded/Eventually may miss faces enrolled a moment ago.
    milvus_search_consistency: MilvusConsistency = MILVUS_DEFAULTS.search_consistency
    milvus_timeout_s: float = Field(default=MILVUS_DEFAULTS.timeout_s, gt=0.0)
    # Milvus vector index, built when the Milvus collection is created: FLAT = exact (like FAISS);
    # HNSW / IVF_FLAT = approximate, faster on large galleries, may miss a neighbour (recall on real
    # faces: README "Milvus"). An existing collection keeps its index (a warning names the difference).
    milvus_index: MilvusIndexKind = MILVUS_DEFAULTS.index
    # graph links per vector (build)
    milvus_hnsw_m: int = Field(default=MILVUS_DEFAULTS.hnsw_m, ge=2, le=2048)
    # build candidates
    milvus_hnsw_ef_construction: int = Field(default=MILVUS_DEFAULTS.hnsw_ef_construction, ge=1, le=32_768)
    # search candidates (raised to k if below)
    milvus_hnsw_ef: int = Field(default=MILVUS_DEFAULTS.hnsw_ef, ge=1, le=32_768)
    # k-means cells per segment (build)
    milvus_ivf_nlist: int = Field(default=MILVUS_DEFAULTS.ivf_nlist, ge=1, le=65_536)
    # cells scanned per search (<= nlist)
    milvus_ivf_nprobe: int = Field(default=MILVUS_DEFAULTS.ivf_nprobe, ge=1, le=65_536)
    # How often every replica compares the store with the vector engine and repairs differences.
    index_reconcile_interval_s: float = Field(default=60.0, ge=0.0)  # 0 = only at start-up
    # Writes stored while the vector engine was down (acknowledged with searchable=false) are pushed
    # to it as soon as it answers: the engine is tried this often while any is pending.
    index_retry_interval_s: float = Field(default=1.0, gt=0.0, le=60.0)

    # Idempotency-Key records (POST enroll / create collection / create subject): a retry with the
    # same key within this time gets the first answer; older records are purged.
    idempotency_key_ttl_s: float = Field(default=24 * 3600.0, ge=1.0)
    # An attempt that died holding its key (process killed mid-request) blocks retries this long.
    idempotency_in_flight_timeout_s: float = Field(default=120.0, ge=1.0)

    # Models: a directory holding the embedding model card, embedder and detector ONNX files.
    model_dir: Path = DEFAULT_MODEL_DIR
    embedder_card: str = "embedder.json"
    detector_model: str = "yunet_2023mar_fp32.onnx"
    # "auto": CUDA when onnxruntime exposes it, else CPU; "cpu" forces the CPU.
    execution_provider: ExecutionProvider = "auto"
    intra_op_threads: int = Field(default=0, ge=0)
    # Exact PRelu rewrite before CPU sessions (~1.7x faster SFace); false runs the ONNX files as is.
    cpu_graph_rewrites: bool = True

    # Dynamic batcher: requests that arrive together are embedded together.
    batching_enabled: bool = True
    batch_max_size: int = Field(default=32, ge=1, le=1024)
    batch_max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)

    # Matching thresholds (squared L2 distance, [0, 4]); None means the model card's calibrated one.
    # default_threshold: 1:1 verification (card ``threshold``). default_identify_threshold: 1:N
    # identification when the collection has none of its own, one value for every size (card:
    # ``identify_threshold_by_size`` read at the collection's size, else ``identify_threshold``).
    default_threshold: float | None = Field(default=None, ge=0.0, le=4.0)
    default_identify_threshold: float | None = Field(default=None, ge=0.0, le=4.0)
    default_top_k: int = Field(default=5, ge=1, le=100)
    max_top_k: int = Field(default=100, ge=1)
    default_max_faces: int = Field(default=10, ge=1)

    # Input safety.
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=10_000)
    max_images_per_request: int = Field(default=16, ge=1)
    # Bodies that are not multipart uploads (JSON): small, whatever the upload limits are.
    max_json_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Subject metadata: compact UTF-8 JSON size and nesting depth (objects/arrays inside each other).
    max_metadata_bytes: int = Field(default=16 * 1024, ge=2)
    max_metadata_depth: int = Field(default=32, ge=1, le=128)
    detection_max_side: int = Field(default=640, ge=64)
    # Cost bounds: pixels of all images of one request (read from the headers, before decoding);
    # images above large_image_pixels are analysed one at a time on a low-priority lane that admits
    # requests while its queued pixels stay within large_image_queue_pixels (else 503 + Retry-After).
    max_request_pixels: int = Field(default=200_000_000, ge=10_000)
    large_image_pixels: int = Field(default=16_000_000, ge=10_000)
    large_image_queue_pixels: int = Field(default=400_000_000, ge=10_000)

    # Quality gate (enrollment rejects, identify reports).
    min_face_size_px: float = Field(default=40.0, ge=0.0)
    min_detector_score: float = Field(default=0.7, ge=0.0, le=1.0)
    min_sharpness: float = Field(default=0.0, ge=0.0)
    detector_score_threshold: float = Field(default=0.6, ge=0.0, le=1.0)

    # Auth: no keys → open. Each entry "KEY" (all collections) or "KEY:coll1,coll2", optionally
    # "ID=KEY..." to give the key an access-key id for AWS Signature V4 (the Rekognition API).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A key that opens only GET /metrics (for a Prometheus scraper). With auth on, an all-collections
    # key opens it too; with neither set, /metrics is open like the rest of the API.
    metrics_key: str = ""

    # Web console at /ui (static files that use the /v1 API like any client); false: no /ui at all.
    console_enabled: bool = True
    # Enrollment keeps a small aligned JPEG crop of each face (a few KB, in the store) for the console;
    # false stores none and serves none (privacy).
    thumbnails_enabled: bool = True

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    _milvus: MilvusSettings = PrivateAttr()
    _model: ModelSettings = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Group the Milvus and model variables once, when the settings are read."""
        self._milvus = MilvusSettings(
            uri=self.milvus_uri,
            token=self.milvus_token,
            db_name=self.milvus_db,
            collection=self.milvus_collection,
            search_consistency=self.milvus_search_consistency,
            timeout_s=self.milvus_timeout_s,
            index=self.milvus_index,
            hnsw_m=self.milvus_hnsw_m,
            hnsw_ef_construction=self.milvus_hnsw_ef_construction,
            hnsw_ef=self.milvus_hnsw_ef,
            ivf_nlist=self.milvus_ivf_nlist,
            ivf_nprobe=self.milvus_ivf_nprobe,
        )
        self._model = ModelSettings(
            model_dir=self.model_dir,
            embedder_card=self.embedder_card,
            detector_path=self.model_dir / self.detector_model,
            execution_provider=self.execution_provider,
            intra_op_threads=self.intra_op_threads,
            cpu_graph_rewrites=self.cpu_graph_rewrites,
        )

    @property
    def milvus(self) -> MilvusSettings:
        """The FACES_MILVUS_* group, built once with the settings."""
        return self._milvus

    @property
    def model(self) -> ModelSettings:
        """FACES_MODEL_DIR, FACES_EMBEDDER_CARD, FACES_DETECTOR_MODEL, FACES_EXECUTION_PROVIDER,
        FACES_INTRA_OP_THREADS and FACES_CPU_GRAPH_REWRITES, built once with the settings."""
        return self._model

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(";") if part.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: list[str]) -> list[str]:
        parse_api_keys(value)  # fail start-up on a key ring that would not mean what it says
        return value

    @field_validator("metrics_key")
    @classmethod
    def _check_metrics_key(cls, value: str) -> str:
        if value != value.strip() or ":" in value or ";" in value:
            raise ValueError("FACES_METRICS_KEY must be one key, without spaces around it, ':' or ';'")
        return value


_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# ``ID=SECRET``: an AWS-style access-key id in front of the secret (base64 padding ``==`` at the end of
# a plain key is not an id: the character after the first ``=`` must not be another ``=``).
_ACCESS_KEY_ID = re.compile(r"^([A-Za-z0-9_.-]{1,128})=([^=].*)$")


def parse_api_keys(entries: list[str]) -> dict[str, frozenset[str] | None]:
    """``KEY`` or ``KEY:coll1,coll2`` entries (each optionally ``ID=KEY...``) → key → allowed
    collections (None: all). See ``parse_key_ring`` for the access-key ids."""
    return parse_key_ring(entries)[0]


def parse_key_ring(
    entries: list[str],
) -> tuple[dict[str, frozenset[str] | None], dict[str, str]]:
    """``[ID=]KEY[:coll1,coll2]`` entries → (key → allowed collections (None: all), access-key id → key).

    The key (the secret) is what ``X-API-Key`` carries on /v1; an entry with an ``ID`` also signs
    AWS Signature V4 requests as that access-key id (the Rekognition-compatible API).
    Anything ambiguous is an error, never a wider key: an empty key, an empty scope (``k:`` or
    ``k: , ``), a scope naming something that cannot be a collection, the same key or id twice.
    """
    keys: dict[str, frozenset[str] | None] = {}
    ids: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        key, colon, scope = entry.partition(":")
        key = key.strip()
        where = f"FACES_API_KEYS entry {number}"
        access_key_id: str | None = None
        named = _ACCESS_KEY_ID.match(key)
        if named is not None:
            access_key_id, key = named.group(1), named.group(2).strip()
        if not key:
            raise ValueError(f"{where} has an empty key")
        if key in keys:
            raise ValueError(f"{where}: the same key is listed twice (give each key one entry)")
        if access_key_id is not None:
            if access_key_id in ids:
                raise ValueError(f"{where}: access-key id {access_key_id!r} is listed twice")
            ids[access_key_id] = key
        if not colon:
            keys[key] = None
            continue
        names = [name.strip() for name in scope.split(",")]
        if not any(names):
            raise ValueError(
                f"{where} ends with ':' but names no collection; write the key alone for all collections"
            )
        for name in names:
            if not _COLLECTION_NAME.match(name):
                raise ValueError(f"{where}: {name!r} is not a collection name")
        keys[key] = frozenset(names)
    return keys, ids
