"""The README's promise: its test command is exactly what CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    cmd = "pip install -r requirements-dev.txt && python -m pytest -q"
    assert cmd in readme and cmd in ci
    assert "pip install -r requirements.txt && streamlit run app.py" in readme


def test_torch_is_pinned_to_the_cpu_build():
    reqs = (ROOT / "requirements.txt").read_text().split()
    assert "torch==2.13.0" in reqs
