"""The import layers of docs/ARCHITECTURE.md, enforced: every import (top-level or inside a
function) of every module under backend/ and pages/ is read with ``ast``; an arrow that
crosses a layer the wrong way fails with the file and the module it imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (files, the backend packages they may never import, why)
RULES = [
    (
        "backend/store",
        ("capture", "views", "jobs", "analysis", "figures", "commands"),
        "the store takes and returns numpy/Arrow; it knows no model, view or job",
    ),
    (
        "backend/capture",
        ("jobs", "store", "views", "commands", "figures"),
        "capture is model + prompts -> records: no SQL, no jobs",
    ),
    (
        "backend/views",
        ("jobs", "commands"),
        "a view reads the store and computes; jobs call views, never the other way",
    ),
    (
        "backend/analysis",
        ("store", "capture", "views", "jobs", "models", "figures", "commands"),
        "analysis is pure numpy: arrays in, frozen dataclass out",
    ),
    (
        "backend/figures",
        ("store", "capture", "jobs", "models", "commands"),
        "figures draw results; no I/O",
    ),
    (
        "backend/records.py",
        ("store", "capture", "views", "jobs", "analysis", "models"),
        "records is the bottom module both capture and the store import",
    ),
    (
        "pages",
        ("store", "analysis", "capture"),
        "pages talk to views and figures (and their _ui helpers), never to the store directly",
    ),
]


def _files(where: str) -> list[Path]:
    p = ROOT / where
    files = [p] if p.suffix == ".py" else sorted(p.rglob("*.py"))
    if where == "pages":  # _ui is the pages' one door to the backend's singletons
        files = [f for f in files if not f.name.startswith("_ui") and "_ui" not in f.parts]
    return files


def _imports(f: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _backend_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "backend" and len(parts) > 1 else None


@pytest.mark.parametrize("where, forbidden, why", RULES, ids=[r[0] for r in RULES])
def test_no_import_crosses_a_layer(where, forbidden, why):
    offenders = sorted(
        {
            f"{f.relative_to(ROOT)} imports {m}"
            for f in _files(where)
            for m in _imports(f)
            if _backend_package(m) in forbidden
        }
    )
    assert not offenders, f"{why}:\n" + "\n".join(offenders)


def test_no_string_dispatch_hides_an_arrow():
    """Registries are explicit imports (backend.views.VIEWS, backend.commands.COMMANDS,
    backend.jobs.kinds): no importlib.import_module of our own modules by name."""
    offenders = [
        str(f.relative_to(ROOT))
        for where in ("backend", "pages")
        for f in (ROOT / where).rglob("*.py")
        if "import_module(" in f.read_text()
    ]
    assert offenders == []


MAX_LINES = 600  #: a module past this is a grab-bag waiting to happen: split it by responsibility


def test_no_module_of_backend_or_pages_is_a_grab_bag():
    long = {
        str(f.relative_to(ROOT)): n
        for where in ("backend", "pages")
        for f in (ROOT / where).rglob("*.py")
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"
