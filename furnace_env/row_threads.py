"""Split a batch of independent rows across a small thread pool (the physics kernel's fast path for big batches).

The oracle planner and the wide vector env step thousands of furnaces at once; one compiled
call per block of rows on ``cpu_count`` threads beats numba's ``prange`` here, which did not
scale past one core (``docs/benchmarks/env.md``). The function handed in must release the
GIL (``numba.njit(nogil=True)``) and treat rows ``a:b`` independently of all others, so the
result does not depend on how the rows are split.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["CHUNK_ROWS", "N_THREADS", "run_row_chunks"]

#: Rows per work item of a split batch (about 35 us of kernel time: the Python overhead of a
#: work item, a few microseconds, stays small, and there are enough items to balance threads;
#: 512 and 1024 measured alike on the development VM, 256 was slower).
CHUNK_ROWS = 512
#: Threads that share a split batch: the calling one and ``N_THREADS - 1`` pool threads.
N_THREADS = max(1, min(8, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=N_THREADS - 1, thread_name_prefix="furnace")
    return _POOL


def run_row_chunks(rows_fn: Callable[..., None], n: int, *args) -> None:
    """Call ``rows_fn(a, b, *args)`` on consecutive blocks ``a:b`` of :data:`CHUNK_ROWS` rows covering ``0:n``.

    The calling thread and the pool threads take blocks in turn until none is left: on a
    shared machine a thread that the OS preempts then holds up one small block, not half
    the batch. Returns when every block is done; an exception in a block is raised here.
    """
    n_chunks = -(-n // CHUNK_ROWS)
    # ``next`` on an itertools counter is atomic under the GIL: each block goes to one thread.
    counter = itertools.count()

    def work() -> None:
        while (c := next(counter)) < n_chunks:
            rows_fn(c * CHUNK_ROWS, min(n, (c + 1) * CHUNK_ROWS), *args)

    futures = [_pool().submit(work) for _ in range(N_THREADS - 1)] if N_THREADS > 1 else []
    work()
    for f in futures:
        f.result()
