"""One CPU thread for a block of many small computations: PyTorch's intra-op pool and the BLAS pools.

Thousands of tiny tensor operations or small matrix products gain nothing from a thread pool, and on
a busy two-core machine its threads' waiting made them 10-1000x slower [project, measured: 20 ms
instead of 0.02 ms per small ``logsigmoid``; whole geometry tables about ten times slower].
:func:`one_thread` is a context manager and a decorator; the previous thread counts come back after.

This module imports nothing from the package (a leaf).
"""

from __future__ import annotations

import contextlib
import sys


class one_thread(contextlib.ContextDecorator):
    """``with one_thread(): ...`` or ``@one_thread()``: torch (when it is imported: otherwise its pool does
    not exist and importing it would cost seconds) and BLAS (via threadpoolctl) on one thread inside,
    restored afterwards (nested uses are fine). One thread also keeps reductions in a fixed order."""

    def __enter__(self):
        from threadpoolctl import threadpool_limits

        self._torch = sys.modules.get("torch")
        self._torch_threads = self._torch.get_num_threads() if self._torch is not None else None
        if self._torch is not None:
            self._torch.set_num_threads(1)
        self._blas = threadpool_limits(limits=1)
        self._blas.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self._blas.__exit__(*exc)
        finally:
            if self._torch is not None:
                self._torch.set_num_threads(self._torch_threads)
        return False
