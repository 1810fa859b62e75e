"""Settings: the flat FACES_* variables, and the Milvus and model groups built from them once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import MILVUS_DEFAULTS, MilvusSettings, Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FACES_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_faces_milvus_variables_fill_the_milvus_group(clean_env: pytest.MonkeyPatch) -> None:
    env = {
        "FACES_MILVUS_URI": "http://milvus.internal:19530",
        "FACES_MILVUS_TOKEN": "root:Milvus",
        "FACES_MILVUS_DB": "faces_db",
        "FACES_MILVUS_COLLECTION": "faces_v2",
        "FACES_MILVUS_SEARCH_CONSISTENCY": "Bounded",
        "FACES_MILVUS_TIMEOUT_S": "2.5",
        "FACES_MILVUS_INDEX": "HNSW",
        "FACES_MILVUS_HNSW_M": "24",
        "FACES_MILVUS_HNSW_EF_CONSTRUCTION": "300",
        "FACES_MILVUS_HNSW_EF": "96",
        "FACES_MILVUS_IVF_NLIST": "512",
        "FACES_MILVUS_IVF_NPROBE": "32",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.milvus == MilvusSettings(
        uri="http://milvus.internal:19530",
        token="root:Milvus",
        db_name="faces_db",
        collection="faces_v2",
        search_consistency="Bounded",
        timeout_s=2.5,
        index="HNSW",
        hnsw_m=24,
        hnsw_ef_construction=300,
        hnsw_ef=96,
        ivf_nlist=512,
        ivf_nprobe=32,
    )
    assert settings.milvus_uri == "http://milvus.internal:19530"  # the flat names still read as before
    assert settings.milvus is settings.milvus  # built once, not per access


def test_milvus_group_defaults_are_the_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)
    assert settings.milvus == MILVUS_DEFAULTS
    assert settings.milvus.uri == "http://127.0.0.1:19530"
    assert settings.milvus.index == "FLAT"


def test_milvus_variables_are_still_validated(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FACES_MILVUS_HNSW_M", "1")
    with pytest.raises(ValidationError, match="milvus_hnsw_m"):
        Settings(_env_file=None)


def test_model_variables_fill_the_model_group(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("FACES_MODEL_DIR", str(tmp_path))
    clean_env.setenv("FACES_EMBEDDER_CARD", "card.json")
    clean_env.setenv("FACES_DETECTOR_MODEL", "detector.onnx")
    clean_env.setenv("FACES_EXECUTION_PROVIDER", "cpu")
    clean_env.setenv("FACES_INTRA_OP_THREADS", "3")
    clean_env.setenv("FACES_CPU_GRAPH_REWRITES", "false")
    model = Settings(_env_file=None).model
    assert model.model_dir == tmp_path
    assert model.embedder_card == "card.json"
    assert model.detector_path == tmp_path / "detector.onnx"
    assert model.execution_provider == "cpu"
    assert model.intra_op_threads == 3
    assert model.cpu_graph_rewrites is False


def test_milvus_group_builds_the_ann_index(clean_env: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pymilvus")
    from service.index.milvus_schema import AnnIndex

    clean_env.setenv("FACES_MILVUS_INDEX", "IVF_FLAT")
    clean_env.setenv("FACES_MILVUS_IVF_NLIST", "64")
    clean_env.setenv("FACES_MILVUS_IVF_NPROBE", "8")
    ann = AnnIndex.from_settings(Settings(_env_file=None).milvus)
    assert ann == AnnIndex("IVF_FLAT", ivf_nlist=64, ivf_nprobe=8)
    assert ann.search_params(5) == {"nprobe": 8}
    assert AnnIndex() == AnnIndex.from_settings(MILVUS_DEFAULTS)
