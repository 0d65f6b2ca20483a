"""Eigen-decompositions run on one BLAS thread (10-30x faster than a pool whose threads
compete for cores) with the same numbers; the limit is always restored, in any thread."""

import threading

import numpy as np
import pytest
import scipy.linalg
from threadpoolctl import threadpool_info

from backend.analysis import projection as P
from backend.analysis import stats as ST
from backend.analysis._threads import one_blas_thread


def _blas_threads() -> int:
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def _spy(monkeypatch, module, name):
    seen, real = [], getattr(module, name)

    def spy(*a, **k):
        seen.append(_blas_threads())
        return real(*a, **k)

    monkeypatch.setattr(module, name, spy)
    return seen


def test_pca_and_effective_rank_decompose_on_one_thread(monkeypatch):
    x = np.random.default_rng(0).normal(size=(300, 40)).astype(np.float32)
    seen_eigh = _spy(monkeypatch, scipy.linalg, "eigh")
    seen_eigvalsh = _spy(monkeypatch, np.linalg, "eigvalsh")
    P.project(np.stack([x, 2 * x]), (0, 1), "aligned")
    ST.effective_rank(x)
    assert seen_eigh == [1, 1] and seen_eigvalsh == [1]


def test_one_thread_gives_the_full_decompositions_numbers():
    """Top-k PCA (evr subset, one thread) = numpy's full eigh on the default pool, signs by
    the largest loading; effective rank = the SVD definition."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2000, 96)) * np.linspace(4, 0.1, 96)).astype(np.float32)
    _, comps, ratio = P.pca_fit(x, 3)
    xc = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    w, v = np.linalg.eigh(xc.T @ xc)
    ref = v[:, ::-1][:, :3].T
    ref *= np.sign(ref[np.arange(3), np.abs(ref).argmax(1)])[:, None]
    np.testing.assert_allclose(comps, ref, atol=1e-10)
    np.testing.assert_allclose(ratio, w[::-1][:3] / w.sum(), rtol=1e-10)
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    assert ST.effective_rank(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-12)


def test_the_limit_is_restored_and_works_from_any_thread():
    before = _blas_threads()
    with one_blas_thread():
        assert _blas_threads() == 1
        with one_blas_thread():
            assert _blas_threads() == 1
        assert _blas_threads() == 1  # the outer block still holds it
    assert _blas_threads() == before
    with pytest.raises(RuntimeError), one_blas_thread():
        raise RuntimeError("inside")
    assert _blas_threads() == before
    # another thread (Streamlit runs scripts in threads): its own limit, then the pool back;
    # the main thread's blocks above did not keep control of the pool
    inside = []

    def other():
        with one_blas_thread():
            inside.append(_blas_threads())
        inside.append(_blas_threads())

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert inside == [1, before] and _blas_threads() == before
