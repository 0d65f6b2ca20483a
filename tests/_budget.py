"""The fast tier's budget, measured by the run itself (a pytest plugin, see tests/conftest.py).

The fast tier is every test not marked ``slow`` or ``browser``. Each test's setup, call and
teardown are timed twice: wall clock, and CPU time of this process (all its threads; BLAS
included). At the end of the session the totals are printed; with
``LAYERSCOPE_FAST_BUDGET_S`` set (CI sets it), a fast tier whose **CPU** time exceeds the
budget fails the session. CPU time, not wall time, because CI machines are shared: a
neighbour's load stretches wall time several-fold but barely moves our own CPU seconds, so the
budget catches a slow test without failing on a busy machine.
"""

from __future__ import annotations

import os
import time

import pytest

_KEY = pytest.StashKey[dict]()


def _totals(config) -> dict:
    """This session's totals (kept on its config: a pytest run inside a test has its own)."""
    if _KEY not in config.stash:
        config.stash[_KEY] = {"wall": 0.0, "cpu": 0.0, "n": 0, "tests": []}
    return config.stash[_KEY]


def _fast(item) -> bool:
    return not any(item.get_closest_marker(m) for m in ("slow", "browser"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _fast(item):
        yield
        return
    w0, c0 = time.perf_counter(), time.process_time()
    yield
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    t = _totals(item.config)
    t["wall"] += wall
    t["cpu"] += cpu
    t["n"] += 1
    t["tests"].append((cpu, item.nodeid))


def budget() -> float | None:
    raw = os.environ.get("LAYERSCOPE_FAST_BUDGET_S")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    t = _totals(config)
    if not t["n"]:
        return
    b = budget()
    tr = terminalreporter
    tr.section("fast tier budget")
    tr.write_line(
        f"fast tier: {t['n']} tests, {t['cpu']:.1f} s CPU, {t['wall']:.1f} s "
        f"wall" + (f"; budget {b:.0f} s CPU" if b else " (no budget set)")
    )
    for cpu, nodeid in sorted(t["tests"], reverse=True)[:15]:
        tr.write_line(f"  {cpu:6.2f} s CPU  {nodeid}")


def pytest_sessionfinish(session, exitstatus):
    b, t = budget(), _totals(session.config)
    if b and t["cpu"] > b and session.exitstatus == 0:
        session.exitstatus = 1
        print(
            f"\nFAIL: the fast tier took {t['cpu']:.1f} s CPU, over its budget of "
            f"{b:.0f} s (LAYERSCOPE_FAST_BUDGET_S): mark the slowest tests slow or make them "
            "faster."
        )
