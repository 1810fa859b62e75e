"""``FACES_MILVUS_INDEX``: the approximate Milvus indexes (HNSW, IVF_FLAT) are built, searched with their
own parameters, and find the same people as exact FLAT on real LFW faces (milvus-lite, in-process).

Recall at scale is measured on a real server by ``bench/bench_milvus_ann.py`` (README "Milvus").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.bootstrap import build_vector_index
from service.domain.gallery import Gallery
from service.settings import Settings
from service.storage.store import FaceStore
from tests.embeddings import LfwGallery, embed_lfw_people
from tests.milvus_server import require_pymilvus
from tests.test_milvus import answers, fill_store

require_pymilvus()

from service.index.milvus_index import AnnIndex, MilvusIndex  # noqa: E402

HNSW = AnnIndex("HNSW", hnsw_m=8, hnsw_ef_construction=64, hnsw_ef=16)
IVF = AnnIndex("IVF_FLAT", ivf_nlist=16, ivf_nprobe=4)


@pytest.fixture(scope="module")
def lfw_people(lfw_root: Path) -> LfwGallery:
    return embed_lfw_people(lfw_root, 24)


@pytest.fixture
def store(tmp_path: Path, lfw_people: LfwGallery) -> Iterator[FaceStore]:
    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    fill_store(store, lfw_people)
    yield store
    store.close()


def engine(store: FaceStore, path: Path, ann: AnnIndex | None = None) -> MilvusIndex:
    index = MilvusIndex(store.faces, 128, uri=str(path), collection="faces_ann", ann=ann)
    index.load_all([c.pk for c in store.collections.list_collections()])
    return index


def test_search_parameters_per_index_type() -> None:
    assert AnnIndex().search_params(40) == {}
    assert AnnIndex().build_params() == {}
    assert HNSW.build_params() == {"M": 8, "efConstruction": 64}
    assert HNSW.search_params(5) == {"ef": 16}
    assert HNSW.search_params(40) == {"ef": 40}  # Milvus refuses ef < k
    assert IVF.build_params() == {"nlist": 16}
    assert IVF.search_params(40) == {"nprobe": 4}
    assert AnnIndex("IVF_FLAT", ivf_nlist=8, ivf_nprobe=64).search_params(5) == {"nprobe": 8}


@pytest.mark.parametrize("ann", [HNSW, IVF], ids=["HNSW", "IVF_FLAT"])
def test_an_approximate_index_is_built_searched_with_its_parameters_and_finds_the_same_people(
    store: FaceStore,
    tmp_path: Path,
    lfw_people: LfwGallery,
    ann: AnnIndex,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exact = Gallery(store, engine(store, tmp_path / "flat.db"))
    approx_index = engine(store, tmp_path / "ann.db", ann)
    approx = Gallery(store, approx_index)
    sent: list[dict[str, Any]] = []
    search = approx_index._client.search

    def spy(*args: Any, **kwargs: Any) -> Any:
        sent.append(kwargs["search_params"])
        return search(*args, **kwargs)

    monkeypatch.setattr(approx_index._client, "search", spy)
    probes = np.stack(list(lfw_people.probes.values()))
    want, got = answers(exact, probes, 5), answers(approx, probes, 5)
    assert sent
    assert all(p["metric_type"] == "IP" and p["params"].keys() == ann.search_params(1).keys() for p in sent)
    for person, flat_ranked, ann_ranked in zip(lfw_people.probes, want, got, strict=True):
        assert ann_ranked[0].subject_id == flat_ranked[0].subject_id
        assert ann_ranked[0].subject_id in (person, "crowd")
        assert ann_ranked[0].distance == pytest.approx(flat_ranked[0].distance, abs=1e-5)
    approx_index.close()

    # The collection keeps the index it was created with: reopened with the default (FLAT) setting,
    # it is searched as what it is, and the difference is logged.
    with caplog.at_level(logging.WARNING, logger="service.index.milvus_index"):
        reopened = MilvusIndex(store.faces, 128, uri=str(tmp_path / "ann.db"), collection="faces_ann")
    assert reopened.ann.kind == ann.kind
    assert reopened.ann.search_params(40).keys() == ann.search_params(40).keys()
    assert any(
        f"already has a {ann.kind}" in r.getMessage() and "FACES_MILVUS_COLLECTION" in r.getMessage()
        for r in caplog.records
    )
    top = answers(Gallery(store, reopened), probes, 1)
    assert [r[0].subject_id for r in top] == [r[0].subject_id for r in want]
    reopened.close()


def test_settings_choose_the_index(store: FaceStore, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        vector_backend="milvus",
        milvus_uri=str(tmp_path / "m.db"),
        milvus_index="IVF_FLAT",
        milvus_ivf_nlist=64,
        milvus_ivf_nprobe=8,
    )
    index = build_vector_index(settings, store, 128)
    assert isinstance(index, MilvusIndex)
    assert index.ann == AnnIndex("IVF_FLAT", ivf_nlist=64, ivf_nprobe=8)
    index.close()
    assert Settings(_env_file=None).milvus_index == "FLAT"  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="milvus_index"):
        Settings(_env_file=None, milvus_index="IVF_PQ")  # type: ignore[call-arg, arg-type]
