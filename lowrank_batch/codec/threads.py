"""Threads for the independent pieces of one image (its planes, and the strips of a plane).

The plane kernels are numba functions that release the GIL (nogil=True), so plain Python
threads run them in parallel. Every piece is decoded from its own stream into its own
output, so the result is the same bits for any thread count.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from ..errors import InvalidParameterError

T = TypeVar("T")
MAX_DEFAULT_THREADS = 8  # beyond this a single image rarely has enough pieces to share out


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, e.g. in a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """One thread per available core, capped at MAX_DEFAULT_THREADS and at $OMP_NUM_THREADS
    where that is set: Ray sets it to a worker's CPU share, and a benchmark that pins itself
    to one core with it gets serial decoding."""
    n = min(available_cores(), MAX_DEFAULT_THREADS)
    try:
        return max(1, min(n, int(os.environ.get("OMP_NUM_THREADS", n))))
    except ValueError:
        return n


def resolve_threads(threads: int | None) -> int:
    """None: default_threads(); else a positive integer, used as given."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidParameterError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def run_all(tasks: list[Callable[[], T]], threads: int | None = None) -> list[T]:
    """Run the tasks on up to `threads` threads; results in task order. The first task's
    exception (in task order) is raised, after every task has finished."""
    n = min(resolve_threads(threads), len(tasks))
    if n <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="lowrank-decode") as pool:
        futures = [pool.submit(task) for task in tasks]
    return [f.result() for f in futures]
