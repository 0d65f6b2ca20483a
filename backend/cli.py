"""`python -m backend <command>`: one module per command in backend/commands/.

Common options: --db PATH (default cache/layerscope.duckdb or $LAYERSCOPE_DB) and --json.
A user-caused problem prints one line `error: ...` and exits 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

from backend.errors import LayerScopeError

#: the verbs users already know, kept as aliases of the feature's one name
ALIASES = {
    "trajectories": ["project"],
    "probes": ["probe"],
    "generation": ["generate"],
    "patching": ["patch"],
    "steering": ["steer"],
}


def _modules():
    from backend.commands import COMMANDS

    yield from COMMANDS.items()


class Parser(argparse.ArgumentParser):
    """A bad flag is one line ``error: ...`` (exit 2) like every other user error, not
    argparse's usage block; ``--help`` shows the usage."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    common = Parser(add_help=False)
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="DuckDB file (default: $LAYERSCOPE_DB or cache/layerscope.duckdb)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print a machine-readable JSON summary on stdout",
    )
    parser = Parser(
        prog="python -m backend",
        parents=[common],
        description="LayerScope: capture and analyse hidden states.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    mods = {}
    for name, mod in _modules():
        aliases = ALIASES.get(name, [])
        p = sub.add_parser(
            name, parents=[common], help=mod.HELP, description=mod.HELP, aliases=aliases
        )
        mod.register(p)
        for verb in [name, *aliases]:
            mods[verb] = mod
    return parser, mods


#: options whose value is a comma-separated list that may start with a minus sign
NEGATIVE_LIST_OPTIONS = ("--alphas",)


def _join_negative_lists(argv: list[str]) -> list[str]:
    """``--alphas -8,-4,0`` as ``--alphas=-8,-4,0``: argparse reads a value starting with '-'
    (that is not one plain number) as an option."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in NEGATIVE_LIST_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    parser, mods = build_parser()
    try:  # a bad flag: argparse prints usage and one `error:` line; main returns its code
        args = parser.parse_args(_join_negative_lists(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    args.db = getattr(args, "db", None)
    args.json = getattr(args, "json", False)
    mod = mods[args.command]
    from backend.store import Store, default_db_path
    from backend.store.schema import check_file_header

    try:
        check_file_header(args.db or default_db_path())
        with _open_store(Store, args.db) as store:
            if getattr(args, "model", "") is None and args.command not in ("delete", "ls", "jobs"):
                from backend.commands._common import model_for_set

                args.model = model_for_set(store, args)
            result = mod.run(args, store)
    except LayerScopeError as e:
        if args.json:
            print(json.dumps({"error": str(e)}))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed runs are kept", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not the user's fault: one line, the details on request
        if os.environ.get("LAYERSCOPE_DEBUG"):
            raise
        if "read-only mode" in str(e):  # a write on a cache opened read-only (see _open_store)
            msg = (
                f"the cache {args.db or default_db_path()} is read-only here (file or mount); "
                "this command writes to it. Copy it somewhere writable and use --db."
            )
            if args.json:
                print(json.dumps({"error": msg}))
            print(f"error: {msg}", file=sys.stderr)
            return 2
        if _damaged_cache(e):  # the file's fault, not a bug; and runs may well be affected
            msg = (
                f"the cache file {args.db or default_db_path()} is damaged "
                f"({str(e).splitlines()[0][:200]}); what it holds cannot all be read. Move it "
                "aside and extract again into a new --db (the damaged file is left as it is)."
            )
            if args.json:
                print(json.dumps({"error": msg}))
            print(f"error: {msg}", file=sys.stderr)
            return 2
        msg = f"internal error ({type(e).__name__}: {e}); stored runs are unaffected. "
        msg += "Rerun with LAYERSCOPE_DEBUG=1 for the traceback and please report it."
        if args.json:
            print(json.dumps({"error": msg}))
        print(f"error: {msg}", file=sys.stderr)
        return 1
    try:
        if args.json:
            print(dumps(result))
        else:
            print(mod.prose(result) if hasattr(mod, "prose") else _default_prose(result))
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _open_store(store_cls, db):
    """The cache read-write; a read-only file or mount is opened read-only instead, so read
    verbs (ls, export, the views on cached runs) still work; a write then says why it fails."""
    try:
        return store_cls(db)
    except LayerScopeError as e:
        text = str(e).lower()
        if not any(s in text for s in ("read-only", "read only", "permission denied")):
            raise
        return store_cls(db, read_only=True)


def _damaged_cache(e: Exception) -> bool:
    """A DuckDB error that says the file itself is corrupt (a block's checksum, a bad header)."""
    text = str(e).lower()
    return type(e).__module__.lstrip("_").startswith("duckdb") and (
        "corrupt" in text or "checksum" in text
    )


def quiet_libraries() -> None:
    """No download/loading bars from Hugging Face libraries in our output.

    Environment only: importing transformers here would cost every command (``ls`` too) a
    second; ``backend.models`` turns transformers' own bars off when it loads a model."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def dumps(result) -> str:
    """Strict JSON: NaN and infinities (an undefined correlation, a constant layer) become
    null, never the bare NaN that JSON parsers reject."""
    return json.dumps(_finite(result), default=_jsonable, allow_nan=False)


def _finite(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if hasattr(o, "tolist") and not isinstance(o, str):
        return _finite(o.tolist())
    return o


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    return str(o)


def _default_prose(result: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in result.items())
