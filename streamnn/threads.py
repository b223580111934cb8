"""`set_threads`: one thread for torch and for numpy's BLAS, which is what small streaming networks want.

A per-event network multiplies matrices of a few dozen rows; a second BLAS or torch thread only adds
synchronisation, and on a busy machine a thread pool that waits for a free core can make a 20 µs
product take half a millisecond (measured: 256x64 @ 64x64 at 90 µs with one OpenBLAS thread and
525 µs with two, under load). The runtime calls this at start; call it yourself in a script.

>>> set_threads(1)
1
"""

from __future__ import annotations

import torch

__all__ = ["set_threads"]

_limiter = None


def set_threads(n: int = 1) -> int:
    """Limit torch's intra-op threads and the BLAS thread pools (numpy's OpenBLAS/MKL) to `n`."""
    global _limiter
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return n
    _limiter = threadpool_limits(limits=n)   # kept alive: the limit holds until changed again
    return n
