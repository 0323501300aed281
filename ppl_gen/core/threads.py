"""Temporarily change torch's intra-op thread count.

Small linear algebra (``Q x Q`` or ``K x D x D`` factorisations, ``D x Q`` products) is
latency-bound: every multi-threaded BLAS / LAPACK call pays an OpenMP barrier, and on a
shared machine a descheduled worker makes that cost milliseconds (measured on the 2-core
development machine under load: 12-24 ms for a ``64 x 5`` product on two threads, tens of
microseconds on one).  The closed-form EM / CAVI code runs such blocks on one thread and
leaves the large ``O(N D^2)`` passes on every thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; the caller's setting is restored."""
    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def single_thread():
    """Run the block on one thread (see the module docstring for why)."""
    return num_threads(1)


def one_thread(fn: Callable) -> Callable:
    """Decorator: run ``fn`` under :func:`single_thread`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_thread():
            return fn(*args, **kwargs)

    return wrapper
