"""DDL of the activation store (owned by backend.store; bump SCHEMA_VERSION on change)."""

SCHEMA_VERSION = 3  #: 2: Parquet shards (shards, run_shards); 3: shards.crc32

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    """CREATE TABLE IF NOT EXISTS models (
        model_id VARCHAR PRIMARY KEY, ref VARCHAR, name VARCHAR, architecture VARCHAR,
        n_layers INTEGER, d_model INTEGER, vocab_size INTEGER, has_lm_head BOOLEAN,
        is_causal BOOLEAN, revision VARCHAR, info_json VARCHAR, last_used TIMESTAMP)""",
    "CREATE TABLE IF NOT EXISTS prompts (prompt_id VARCHAR PRIMARY KEY, text VARCHAR)",
    """CREATE TABLE IF NOT EXISTS prompt_sets (
        set_name VARCHAR PRIMARY KEY, description VARCHAR, source VARCHAR, created_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS set_prompts (
        set_name VARCHAR, idx INTEGER, prompt_id VARCHAR, label VARCHAR, grp VARCHAR,
        token_labels VARCHAR[])""",
    # kind: 'prompt' | 'generation'; parent/sample/seed: generation runs of one request
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, model_id VARCHAR, prompt_id VARCHAR, kind VARCHAR,
        settings VARCHAR, n_tokens INTEGER, n_prompt_tokens INTEGER, truncated BOOLEAN,
        parent VARCHAR, sample INTEGER, seed BIGINT, created_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS tokens (
        run_id VARCHAR, pos INTEGER, token_id INTEGER, token VARCHAR, char_start INTEGER,
        char_end INTEGER, is_special BOOLEAN)""",
    # one row per (run, layer): codec 'f16' or 'bf16', data = (n_tokens, d_model) little-endian
    """CREATE TABLE IF NOT EXISTS activations (
        run_id VARCHAR, layer SMALLINT, n_tokens INTEGER, d_model INTEGER, codec VARCHAR,
        data BLOB)""",
    # Parquet shards written by the Ray engine (backend/jobs/ray_engine.py), read in place:
    # one row per file; a file holds one layer (its directory is layer=K) of a job's runs
    """CREATE TABLE IF NOT EXISTS shards (
        model_id VARCHAR, job_id VARCHAR, path VARCHAR PRIMARY KEY, layer SMALLINT,
        n_runs INTEGER, bytes BIGINT, created_at TIMESTAMP)""",
    # where a run's vectors live when not in `activations`: the shard job that holds them
    # each file's CRC-32 at registration (NULL for files registered before schema 3)
    "ALTER TABLE shards ADD COLUMN IF NOT EXISTS crc32 BIGINT",
    """CREATE TABLE IF NOT EXISTS run_shards (
        run_id VARCHAR PRIMARY KEY, model_id VARCHAR, job_id VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id VARCHAR PRIMARY KEY, kind VARCHAR, spec VARCHAR, status VARCHAR,
        tokens_total BIGINT, tokens_done BIGINT, runs_total INTEGER, runs_done INTEGER,
        runs_cached INTEGER, message VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP,
        pid INTEGER)""",
    """CREATE TABLE IF NOT EXISTS derived (
        kind VARCHAR, key VARCHAR, payload BLOB, created_at TIMESTAMP, PRIMARY KEY (kind, key))""",
]


#: bytes 8..11 of every DuckDB database file (after the header checksum)
DUCKDB_MAGIC = b"DUCK"


def check_file_header(path) -> None:
    """Refuse an existing file that is not a DuckDB database (a SQLite file, a CSV...) before
    DuckDB opens it: DuckDB would try to load (download) an extension for some formats."""
    from pathlib import Path

    from backend.errors import LayerScopeError

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return  # a new cache, or one DuckDB initialises
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError:
        return  # DuckDB says why it cannot open it
    if head[8:12] != DUCKDB_MAGIC:
        what = "it is a SQLite database" if head.startswith(b"SQLite format 3") else "its header"
        what += " is not DuckDB's" if what == "its header" else ""
        raise LayerScopeError(
            f"The cache file {p.name} is not a valid DuckDB database ({what}); give another --db "
            "(or LAYERSCOPE_DB) path."
        )
