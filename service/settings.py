"""Service configuration: read once at start-up from FACES_* environment variables (or .env)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "artifacts"


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

    # Vector engine: "faiss" (embedded, one index per process, the default) or "milvus" (shared by
    # every API replica; pip install -e ".[milvus]"). The store stays the source of truth for both.
    vector_backend: Literal["faiss", "milvus"] = "faiss"
    # A Milvus server ("http://host:19530"), or a local file path for the in-process milvus-lite.
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str = ""
    milvus_db: str = ""  # empty: the server's "default" database
    milvus_collection: str = Field(default="faces", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    # Identify's read consistency. Customized = as of the last insert any replica acknowledged (its
    # Milvus timestamp is kept in the store): read-your-writes across replicas, waiting only right
    # after a write. Strong = the same guarantee, but every search waits for the next time tick
    # (~proxy.timeTickInterval); Bounded/Eventually may miss faces enrolled a moment ago.
    milvus_search_consistency: Literal["Customized", "Strong", "Bounded", "Session", "Eventually"] = (
        "Customized"
    )
    milvus_timeout_s: float = Field(default=10.0, gt=0.0)
    # How often every replica compares the store with the vector engine and repairs differences.
    index_reconcile_interval_s: float = Field(default=60.0, ge=0.0)  # 0 = only at start-up

    # Models: a directory holding the embedding model card, embedder and detector ONNX files.
    model_dir: Path = DEFAULT_MODEL_DIR
    embedder_card: str = "embedder.json"
    detector_model: str = "yunet_2023mar_fp32.onnx"
    # "auto": CUDA when onnxruntime exposes it, else CPU; "cpu" forces the CPU.
    execution_provider: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(default=0, ge=0)
    # Exact PRelu rewrite before CPU sessions (~1.7x faster SFace); false runs the ONNX files as is.
    cpu_graph_rewrites: bool = True

    # Dynamic batcher: requests that arrive together are embedded together.
    batching_enabled: bool = True
    batch_max_size: int = Field(default=32, ge=1, le=1024)
    batch_max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)

    # Matching: None means "the model card's calibrated threshold" (squared L2 distance, [0, 4]).
    default_threshold: float | None = Field(default=None, ge=0.0, le=4.0)
    default_top_k: int = Field(default=5, ge=1, le=100)
    max_top_k: int = Field(default=100, ge=1)
    default_max_faces: int = Field(default=10, ge=1)

    # Input safety.
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=10_000)
    max_images_per_request: int = Field(default=16, ge=1)
    detection_max_side: int = Field(default=640, ge=64)

    # Quality gate (enrollment rejects, identify reports).
    min_face_size_px: float = Field(default=40.0, ge=0.0)
    min_detector_score: float = Field(default=0.7, ge=0.0, le=1.0)
    min_sharpness: float = Field(default=0.0, ge=0.0)
    detector_score_threshold: float = Field(default=0.6, ge=0.0, le=1.0)

    # Auth: no keys → open. Each entry "KEY" (all collections) or "KEY:coll1,coll2".
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(";") if part.strip()]
        return value
