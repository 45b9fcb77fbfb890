"""Scale-out backend: nested multi-vectors in a Qdrant collection.

:class:`QdrantIndex` has the API of the embedded index (``create``, ``open``,
``add``, ``delete``, ``search``, ``len``, ``stats``) over ``qdrant-client``
(optional extra ``metaembed[qdrant]``, imported lazily), so the same code runs
in-process (``":memory:"`` or a folder) or against a Qdrant server or cluster
(``url=``). The collection layout is described in
:mod:`metaembed.index.qdrant_layout`. Search with a budget ``(r_q, r_c)``:

1. prefetch: the first query vector against the dense ``"first"`` vector (HNSW),
   ``prefetch_limit`` candidates (the trained (1, 1) group as a first stage);
2. rerank: the first ``r_q`` query vectors against the multivector holding the
   first ``r_c`` candidate vectors with ``MAX_SIM`` (DOT), so scores equal
   :func:`metaembed.maxsim` on the reranked candidates.

``exact=True`` skips the prefetch and scans every candidate exactly, which is
what the congruence tests compare. Ids are non-negative int64 values used as
Qdrant point ids; metadata dicts become payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaembed.budget import Budget
from metaembed.index.base import EMPTY_ID, EMPTY_SCORE, MultiVectorIndexBase, SearchResult
from metaembed.index.qdrant_layout import FIRST_VECTOR, QdrantLayout, default_prefix_sizes
from metaembed.index.validation import check_candidates, check_ids, check_k, check_metadata
from metaembed.maxsim import as_float_tensor, check_embeddings

__all__ = ["QdrantIndex"]

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "metaembed"
DEFAULT_PREFETCH_LIMIT = 200
_METADATA_KEY = "metaembed"


def _qdrant() -> tuple[Any, Any]:
    """Import ``qdrant_client`` lazily; a clear error names the extra to install."""
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "QdrantIndex needs qdrant-client: pip install 'metaembed[qdrant]'"
        ) from error
    return qdrant_client, models


def _connect(
    path: Any, url: str | None, api_key: str | None, client: Any, client_options: dict | None
) -> Any:
    """Return a ``QdrantClient`` for ``client``, ``url``, ``":memory:"`` or a local folder."""
    if client is not None:
        return client
    qdrant_client, _ = _qdrant()
    if url is None and isinstance(path, str) and path.startswith(("http://", "https://")):
        url, path = path, None
    if url is not None:
        return qdrant_client.QdrantClient(url=url, api_key=api_key, **(client_options or {}))
    if path is None:
        raise ValueError("give a location: ':memory:', a folder, url='http://host:6333' or client=")
    if str(path) == ":memory:":
        return qdrant_client.QdrantClient(location=":memory:")
    return qdrant_client.QdrantClient(path=str(Path(path)))


def _is_local(client: Any) -> bool:
    """Whether ``client`` runs Qdrant in-process (always exact; search params do nothing)."""
    options = getattr(client, "init_options", {}) or {}
    return options.get("location") == ":memory:" or options.get("path") is not None


class QdrantIndex(MultiVectorIndexBase):
    """Nested multi-vector index stored in a Qdrant collection.

    Build one with :meth:`create` or :meth:`open`, not the constructor.

    >>> import torch
    >>> index = QdrantIndex.create(":memory:", dim=4, num_vectors=4)
    >>> candidates = torch.nn.functional.normalize(torch.randn(3, 4, 4), dim=-1)
    >>> index.add([10, 11, 12], candidates)
    >>> result = index.search(candidates[:1], k=2, budget="4x4", exact=True)
    >>> int(result.ids[0, 0]), len(index)
    (10, 3)
    """

    def __init__(
        self,
        client: Any,
        collection: str,
        layout: QdrantLayout,
        prefetch_limit: int = DEFAULT_PREFETCH_LIMIT,
        upsert_batch_size: int = 64,
    ) -> None:
        if prefetch_limit < 1 or upsert_batch_size < 1:
            raise ValueError(
                f"prefetch_limit and upsert_batch_size must be >= 1, got {prefetch_limit} "
                f"and {upsert_batch_size}"
            )
        self.client = client
        self.collection = collection
        self.layout = layout
        self.prefetch_limit = prefetch_limit
        self.upsert_batch_size = upsert_batch_size
        self._search_params = not _is_local(client)

    @property
    def dim(self) -> int:
        """Dimension of the meta embeddings."""
        return self.layout.dim

    @property
    def num_vectors(self) -> int:
        """Vectors stored per candidate (the largest stored prefix)."""
        return self.layout.num_vectors

    @classmethod
    def create(
        cls,
        path: Any = ":memory:",
        dim: int = 128,
        num_vectors: int = 64,
        *,
        url: str | None = None,
        api_key: str | None = None,
        client: Any = None,
        collection: str = DEFAULT_COLLECTION,
        prefix_sizes: Sequence[int] | None = None,
        datatype: str = "float32",
        on_disk: bool = False,
        quantization_config: Any = None,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        prefetch_limit: int = DEFAULT_PREFETCH_LIMIT,
        upsert_batch_size: int = 64,
        client_options: dict[str, Any] | None = None,
    ) -> QdrantIndex:
        """Create the collection and return its index.

        Parameters
        ----------
        path : str or Path, optional
            ``":memory:"`` (in-process, default), a folder (in-process, persisted)
            or an ``http(s)://`` address; ignored when ``url`` or ``client`` is given.
        dim, num_vectors : int
            Embedding dimension and vectors stored per candidate.
        url, api_key, client, client_options
            A Qdrant server or cluster (``client_options`` go to ``QdrantClient``,
            e.g. ``{"prefer_grpc": True, "timeout": 60}``), or a ready ``QdrantClient``.
        collection : str
            Collection name; an existing collection of that name is an error.
        prefix_sizes : sequence of int, optional
            Stored prefixes (default: the trained groups' r_c, see
            :func:`~metaembed.index.qdrant_layout.default_prefix_sizes`).
        datatype, on_disk, quantization_config, shard_number, replication_factor
            Passed to Qdrant (see ``docs/qdrant.md`` for recommended values).
        prefetch_limit : int
            Default number of prefetched candidates ``K'`` for non-exact search.
        """
        _, models = _qdrant()
        sizes = default_prefix_sizes(num_vectors) if prefix_sizes is None else tuple(prefix_sizes)
        layout = QdrantLayout(dim=dim, prefix_sizes=sizes, datatype=datatype)
        if layout.num_vectors != num_vectors:
            raise ValueError(
                f"the largest prefix size {layout.num_vectors} must equal num_vectors={num_vectors}"
            )
        client = _connect(path, url, api_key, client, client_options)
        if client.collection_exists(collection):
            raise ValueError(
                f"collection {collection!r} already exists; use QdrantIndex.open or another name"
            )
        client.create_collection(
            collection,
            vectors_config=layout.vectors_config(models, on_disk=on_disk),
            quantization_config=quantization_config,
            shard_number=shard_number,
            replication_factor=replication_factor,
            metadata={_METADATA_KEY: layout.to_metadata()},
        )
        logger.info(
            "created Qdrant collection %r with prefixes %s", collection, layout.prefix_sizes
        )
        return cls(client, collection, layout, prefetch_limit, upsert_batch_size)

    @classmethod
    def open(
        cls,
        path: Any = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        client: Any = None,
        collection: str = DEFAULT_COLLECTION,
        prefetch_limit: int = DEFAULT_PREFETCH_LIMIT,
        upsert_batch_size: int = 64,
        client_options: dict[str, Any] | None = None,
    ) -> QdrantIndex:
        """Open a collection made by :meth:`create` (same location arguments)."""
        if client is None and url is None and str(path) == ":memory:":
            raise ValueError(
                "an in-memory collection lives only inside its client; pass client=index.client"
            )
        client = _connect(path, url, api_key, client, client_options)
        if not client.collection_exists(collection):
            raise ValueError(f"collection {collection!r} does not exist; create it first")
        config = client.get_collection(collection).config
        described = (getattr(config, "metadata", None) or {}).get(_METADATA_KEY)
        if described is not None:
            layout = QdrantLayout.from_metadata(described, collection)
        else:  # servers before collection metadata: read the layout off the named vectors
            layout = QdrantLayout.from_vectors_config(config.params.vectors, collection)
        return cls(client, collection, layout, prefetch_limit, upsert_batch_size)

    def close(self) -> None:
        """Close the client (releases the lock of a local folder)."""
        self.client.close()

    def add(
        self,
        ids: Sequence[int] | np.ndarray,
        candidate_embeddings: Any,
        metadata: Sequence[dict[str, Any]] | None = None,
        *,
        upsert: bool = False,
    ) -> None:
        """Add candidates of shape (N, R, D), R >= ``num_vectors``.

        Ids already in the collection raise ``ValueError`` unless ``upsert=True``,
        which replaces them. ``metadata`` (one dict per id) is stored as payload.
        Points are sent in batches of ``upsert_batch_size``; a failure part-way
        leaves the earlier batches stored, so retry the call with ``upsert=True``.
        """
        _, models = _qdrant()
        id_array = check_ids(ids)
        stored = check_candidates(
            candidate_embeddings, len(id_array), self.dim, self.num_vectors
        )  # (N, num_vectors, D) float32
        payloads = check_metadata(metadata, len(id_array))
        if not upsert:
            existing = self._existing(id_array)
            if existing:
                raise ValueError(
                    f"ids already present, e.g. {sorted(existing)[:5]}; "
                    "pass upsert=True to replace them"
                )
        for start in range(0, len(id_array), self.upsert_batch_size):
            stop = start + self.upsert_batch_size
            block = stored[start:stop]  # (n, num_vectors, D)
            vectors = {FIRST_VECTOR: block[:, 0].tolist()}
            for size in self.layout.multivector_sizes:
                vectors[self.layout.vector_name(size)] = block[:, :size].tolist()
            batch = models.Batch(
                ids=id_array[start:stop].tolist(),
                vectors=vectors,
                payloads=None if payloads is None else [p or {} for p in payloads[start:stop]],
            )
            self.client.upsert(self.collection, points=batch, wait=True)

    def _existing(self, id_array: np.ndarray) -> set[int]:
        """Return the subset of ``id_array`` present in the collection."""
        found: set[int] = set()
        for start in range(0, len(id_array), 1000):
            points = self.client.retrieve(
                self.collection,
                ids=id_array[start : start + 1000].tolist(),
                with_payload=False,
                with_vectors=False,
            )
            found.update(int(point.id) for point in points)
        return found

    def delete(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete candidates by id; unknown ids are ignored. Returns how many were removed."""
        _, models = _qdrant()
        id_array = check_ids(ids)
        present = sorted(self._existing(id_array))
        if present:
            self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=present), wait=True
            )
        return len(present)

    def metadata(self, ids: Sequence[int] | np.ndarray) -> list[dict[str, Any] | None]:
        """Return the stored metadata of each id (``None`` for unknown ids)."""
        id_array = check_ids(ids)
        points = self.client.retrieve(self.collection, ids=id_array.tolist(), with_payload=True)
        payloads = {int(point.id): point.payload for point in points}
        return [payloads.get(int(item)) for item in id_array]

    def search(
        self,
        query_embeddings: Any,
        k: int = 10,
        budget: Budget | str | None = None,
        *,
        exact: bool = False,
        prefetch_limit: int | None = None,
        round_up: bool = False,
        query_filter: Any = None,
    ) -> SearchResult:
        """Top-``k`` candidates per query (shape (Nq, Rq, D)) under ``budget``.

        ``budget=None`` uses every query vector and every stored candidate vector.
        ``exact=True`` scans every candidate; otherwise the first query vector
        prefetches ``prefetch_limit`` (default: the index's) candidates by HNSW on
        the dense first vector, which are reranked exactly. ``round_up`` rounds an
        unstored ``r_c`` up to the next stored prefix instead of raising.
        ``query_filter`` (a ``qdrant_client.models.Filter`` on the metadata
        payload) restricts both the prefetch and the rerank.
        """
        queries = as_float_tensor(query_embeddings, "query_embeddings")
        check_embeddings(queries, "query_embeddings", dim=self.dim)
        k = check_k(k)
        num_queries, num_query_vectors, _ = queries.shape
        budget = (
            Budget(num_query_vectors, self.num_vectors) if budget is None else Budget.parse(budget)
        )
        budget = self.layout.resolve(budget, num_query_vectors, round_up=round_up)
        limit = max(k, prefetch_limit or self.prefetch_limit)
        query_array = queries[:, : budget.r_q].to(torch.float32).cpu().numpy()  # (Nq, r_q, D)
        requests = [
            self._request(query, budget, k, exact, limit, query_filter) for query in query_array
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        ids = np.full((num_queries, k), EMPTY_ID, dtype=np.int64)
        scores = np.full((num_queries, k), EMPTY_SCORE, dtype=np.float32)
        for row, response in enumerate(responses):
            for column, point in enumerate(response.points[:k]):
                ids[row, column] = int(point.id)
                scores[row, column] = point.score
        return SearchResult(ids=ids, scores=scores, budget=budget)

    def _request(
        self,
        query: np.ndarray,
        budget: Budget,
        k: int,
        exact: bool,
        limit: int,
        query_filter: Any = None,
    ) -> Any:
        """Build the ``QueryRequest`` of one query of shape (r_q, D)."""
        _, models = _qdrant()
        exact_params = ann_params = None
        if self._search_params:  # a local client is always exact and warns about params
            exact_params = models.SearchParams(
                exact=True, quantization=models.QuantizationSearchParams(ignore=True)
            )
            ann_params = models.SearchParams(hnsw_ef=max(limit, 64))
        if budget.r_c == 1:  # sum_i <q_i, c_1> = <sum_i q_i, c_1>: one dense query
            return models.QueryRequest(
                query=query.sum(axis=0).tolist(),  # (D,)
                using=FIRST_VECTOR,
                limit=k,
                params=exact_params if exact else ann_params,
                filter=query_filter,
            )
        prefetch = None
        if not exact:
            prefetch = models.Prefetch(
                query=query[0].tolist(),  # (D,) the first query vector
                using=FIRST_VECTOR,
                limit=limit,
                params=ann_params,
            )  # Qdrant propagates the request's filter into its prefetches
        return models.QueryRequest(
            query=query.tolist(),  # (r_q, D)
            using=self.layout.vector_name(budget.r_c),
            prefetch=prefetch,
            limit=k,
            params=exact_params if exact else None,
            filter=query_filter,
        )

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def stats(self) -> dict[str, Any]:
        """Sizes: candidates, dim, stored prefixes, datatype and bytes per budget."""
        num_candidates = len(self)
        return {
            "backend": "qdrant",
            "collection": self.collection,
            "num_candidates": num_candidates,
            "dim": self.dim,
            "num_vectors": self.num_vectors,
            "prefix_sizes": list(self.layout.prefix_sizes),
            "dtype": self.layout.datatype,
            "stored_vectors_per_candidate": self.layout.stored_vectors_per_candidate,
            "prefetch_limit": self.prefetch_limit,
            **self.layout.storage_bytes(num_candidates),
        }
