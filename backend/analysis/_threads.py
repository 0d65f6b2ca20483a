"""LAPACK eigen-decompositions on one BLAS thread.

A symmetric eigen-decomposition (``eigh``, ``eigvalsh``) spends its time in the reduction to
tridiagonal form: thousands of small matrix-vector steps, each ending at a barrier of the
BLAS thread pool. When the pool's threads compete for cores (another process, Streamlit's
other threads, torch), every barrier waits for a descheduled thread: a 768 x 768 ``eigh``
took 0.4-1.1 s on 2 threads of the shared 2-core machine and 35-95 ms on one (same LAPACK
routine, same numbers to ~1e-15). :func:`one_blas_thread` limits numpy's and scipy's BLAS to
one thread around such calls only; matrix products elsewhere keep every thread.

OpenBLAS's pool is process-wide and threadpoolctl lets one thread at a time change it (the
others silently do nothing), so the blocks are serialised by a lock and each sets and
restores the limit in its own thread (a re-entrant lock: nested blocks are fine). The blocks
are short and single-threaded anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.RLock()
_controller = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with numpy's and scipy's BLAS/LAPACK on one thread."""
    global _controller
    with _lock:
        if _controller is None:  # finds the loaded BLAS libraries once: load scipy's too
            import scipy.linalg  # noqa: F401
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        with _controller.limit(limits=1, user_api="blas"):
            yield
