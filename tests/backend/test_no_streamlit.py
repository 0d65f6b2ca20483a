"""The backend never imports streamlit (the design keeps it UI-free)."""

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"


def test_backend_never_imports_streamlit():
    offenders = []
    for f in BACKEND.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "streamlit" for n in names):
                offenders.append(str(f.relative_to(BACKEND)))
    assert offenders == []


def test_sql_only_in_store_modules():
    """Every SQL string lives in backend/store/ (one module per responsibility)."""
    offenders = []
    for f in BACKEND.rglob("*.py"):
        if f.parent.name == "store":
            continue
        src = f.read_text()
        if ".execute(" in src and ("SELECT " in src or "INSERT " in src):
            offenders.append(f.name)
    assert offenders == []
