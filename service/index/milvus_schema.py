"""The Milvus collection's layout and vector index: created when missing, checked and adopted when not.

One Milvus collection holds every face collection: primary key = the store's face pk (INT64, never
reused), partition key = the store's collection pk, ``FLOAT_VECTOR(dim)`` with metric IP on unit
vectors. The vector index is built when the Milvus collection is created; a collection that already
exists keeps its index (a warning names the difference) and is searched with parameters that fit it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, get_args

from pymilvus import DataType, MilvusClient

from service.errors import VectorEngineUnavailable
from service.settings import MILVUS_DEFAULTS, MilvusIndexKind, MilvusSettings

logger = logging.getLogger(__name__)

IndexKind = MilvusIndexKind
PK_FIELD, PARTITION_FIELD, VECTOR_FIELD = "pk", "collection_pk", "embedding"
NUM_PARTITIONS = 16


@dataclass(frozen=True, slots=True)
class AnnIndex:
    """The Milvus vector index and its knobs: exact ``FLAT``, or approximate ``HNSW`` / ``IVF_FLAT``.

    HNSW: a graph of ``hnsw_m`` links per vector built with ``hnsw_ef_construction`` candidates; a
    search explores ``hnsw_ef`` candidates (raised to k when k is larger: Milvus requires ef >= k).
    IVF_FLAT: ``ivf_nlist`` k-means cells per segment; a search scans the ``ivf_nprobe`` nearest cells
    (at most ``ivf_nlist``). Larger ef / nprobe: higher recall, slower searches. The defaults are
    ``Settings``' (``service.settings.MILVUS_DEFAULTS``).
    """

    kind: IndexKind = MILVUS_DEFAULTS.index
    hnsw_m: int = MILVUS_DEFAULTS.hnsw_m
    hnsw_ef_construction: int = MILVUS_DEFAULTS.hnsw_ef_construction
    hnsw_ef: int = MILVUS_DEFAULTS.hnsw_ef
    ivf_nlist: int = MILVUS_DEFAULTS.ivf_nlist
    ivf_nprobe: int = MILVUS_DEFAULTS.ivf_nprobe

    @classmethod
    def from_settings(cls, milvus: MilvusSettings) -> AnnIndex:
        return cls(
            kind=milvus.index,
            hnsw_m=milvus.hnsw_m,
            hnsw_ef_construction=milvus.hnsw_ef_construction,
            hnsw_ef=milvus.hnsw_ef,
            ivf_nlist=milvus.ivf_nlist,
            ivf_nprobe=milvus.ivf_nprobe,
        )

    def build_params(self) -> dict[str, int]:
        if self.kind == "HNSW":
            return {"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction}
        if self.kind == "IVF_FLAT":
            return {"nlist": self.ivf_nlist}
        return {}

    def search_params(self, k: int) -> dict[str, int]:
        if self.kind == "HNSW":
            return {"ef": max(self.hnsw_ef, k)}
        if self.kind == "IVF_FLAT":
            return {"nprobe": max(1, min(self.ivf_nprobe, self.ivf_nlist))}
        return {}

    def describe(self) -> str:
        if self.kind == "HNSW":
            return f"HNSW M={self.hnsw_m} efConstruction={self.hnsw_ef_construction} ef={self.hnsw_ef}"
        if self.kind == "IVF_FLAT":
            return f"IVF_FLAT nlist={self.ivf_nlist} nprobe={self.ivf_nprobe}"
        return "FLAT (exact)"


def in_collection(collection_pk: int) -> str:
    """The filter expression selecting one face collection's vectors."""
    return f"{PARTITION_FIELD} == {int(collection_pk)}"


def ensure_collection(client: MilvusClient, name: str, dim: int, ann: AnnIndex) -> AnnIndex:
    """Create the Milvus collection with ``ann``, or check an existing one; load it either way.

    Returns the vector index to search with: ``ann``, or the one an existing collection already has.
    """
    if client.has_collection(name):
        check_schema(client.describe_collection(name), name, dim)
        ann = adopt_existing_index(client, name, ann)
    else:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(PK_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(PARTITION_FIELD, DataType.INT64, is_partition_key=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        index_params = client.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR_FIELD,
            index_type=ann.kind,
            metric_type="IP",
            params=ann.build_params(),
        )
        client.create_collection(
            name,
            schema=schema,
            index_params=index_params,
            num_partitions=NUM_PARTITIONS,
            consistency_level="Strong",
        )
        logger.info("created Milvus collection %r with a %s index", name, ann.describe())
    client.load_collection(name)
    return ann


def check_schema(described: dict[str, Any], name: str, dim: int) -> None:
    fields = {f["name"]: f for f in described.get("fields", [])}
    vector = fields.get(VECTOR_FIELD)
    found_dim = int((vector or {}).get("params", {}).get("dim", -1))
    partition = fields.get(PARTITION_FIELD, {})
    if PK_FIELD not in fields or found_dim != dim or not partition.get("is_partition_key"):
        raise VectorEngineUnavailable(
            f"Milvus collection {name!r} exists with another layout (vector dim {found_dim}, model "
            f"{dim}); set FACES_MILVUS_COLLECTION to a new name or drop it."
        )


def index_state(client: MilvusClient, name: str) -> dict[str, Any]:
    """Milvus's description of the vector index: type, build parameters, indexed/pending rows."""
    names = client.list_indexes(name, field_name=VECTOR_FIELD)
    return dict(client.describe_index(name, names[0])) if names else {}


def adopt_existing_index(client: MilvusClient, name: str, ann: AnnIndex) -> AnnIndex:
    """Parameters that fit the index an existing collection has; a warning on a mismatch.

    The index is not rebuilt here: with several replicas starting at once, each would drop and
    rebuild it. To change it, point ``FACES_MILVUS_COLLECTION`` at a new name (start-up fills it
    from the store) or drop the collection.
    """
    found = index_state(client, name)
    kind = str(found.get("index_type", "")).upper()
    if kind not in get_args(IndexKind):
        logger.warning(
            "Milvus collection %r has a %s index on %r, not one this service builds (%s); searching "
            "it with default parameters",
            name,
            kind or "missing",
            VECTOR_FIELD,
            ", ".join(get_args(IndexKind)),
        )
        return ann
    built = {key: int(found[key]) for key in ("M", "efConstruction", "nlist") if key in found}
    existing = replace(
        ann,
        kind=kind,  # type: ignore[arg-type]  # checked against IndexKind above
        hnsw_m=built.get("M", ann.hnsw_m),
        hnsw_ef_construction=built.get("efConstruction", ann.hnsw_ef_construction),
        ivf_nlist=built.get("nlist", ann.ivf_nlist),
    )
    if existing.build_params() != ann.build_params() or existing.kind != ann.kind:
        logger.warning(
            "Milvus collection %r already has a %s index; FACES_MILVUS_INDEX asks for %s. The "
            "existing index is kept and searched as it is. To change it, set "
            "FACES_MILVUS_COLLECTION to a new name (start-up fills it from the store) or drop the "
            "collection.",
            name,
            existing.describe(),
            ann.describe(),
        )
    return existing
