"""The activation store: one DuckDB file, every SQL string of the project, numpy in/out.

One ``Store`` owns a DuckDB database instance; ``cursor()`` gives another ``Store`` on the
same database for another thread (DuckDB's MVCC keeps readers consistent while the worker
writes). A run becomes visible in one transaction together with its tokens and all layers.

``Store`` is assembled from one part per responsibility, each in its own module:
connection (open, schema, transactions), catalog (models, prompt sets), runs (metadata,
ingest, delete), vectors (activation reads, export), shards (Ray's Parquet files), derived
(sizes, the derived-results cache, throughput), jobs (job rows).
"""

from __future__ import annotations

from backend.store.catalog import _Catalog
from backend.store.connection import DEFAULT_DB, _Connection, default_db_path

__all__ = ["DEFAULT_DB", "Store", "default_db_path"]
from backend.store.derived import _Derived
from backend.store.jobs import _Jobs
from backend.store.runs import _Runs
from backend.store.shards import _Shards
from backend.store.vectors import _Vectors


class Store(_Connection, _Catalog, _Runs, _Vectors, _Shards, _Derived, _Jobs):
    """DuckDB-backed cache of models, prompt sets, runs, tokens and activations."""
