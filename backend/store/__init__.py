"""The cache: one DuckDB file (``store.py`` owns every SQL string), its schema and codec.

Importing this package never imports torch: the store takes and returns numpy/Arrow.
"""

from backend.store.store import Store, default_db_path

__all__ = ["Store", "default_db_path"]
