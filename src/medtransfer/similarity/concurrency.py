"""Independent similarity problems scored side by side on the CPU's threads.

Why threads of one torch thread each, rather than one problem at a time on all threads: a fold's
layer-wise similarity is many independent problems (pair x layer), most of them small batched
ones on which torch's own threads only spin-wait (:func:`~medtransfer.similarity.bootstrap.small_problem_threads`
runs those on one thread), so one problem at a time leaves all but one core idle for most of the
stage. torch's kernels and the BLAS release the GIL, so problems on separate Python threads run
on separate cores. torch's and the BLAS libraries' thread counts are set to one while workers
run (a worker's setting can reach the caller's thread too), and the caller's are restored after.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


#: Memory one worker may hold at once (a pair's image-pair cross blocks, the batched products and
#: resamples of :mod:`medtransfer.similarity.bootstrap`, with room): workers are capped so that
#: all of them fit in the memory available.
WORKER_BYTES = 1 << 30


def available_bytes() -> int | None:
    """Memory available to new allocations (Linux ``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def scoring_workers(threads: int) -> int:
    """Threads to score problems on: ``threads``, fewer where their memory would not fit."""
    free = available_bytes()
    cap = threads if free is None else max(1, free // WORKER_BYTES)
    return max(1, min(int(threads), cap))


def map_in_order(function: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``function(item)`` for each of ``items``, yielded in the items' order.

    ``workers > 1``: computed on that many threads, with torch and the BLAS libraries on one
    thread each (the caller's settings are restored when the iteration ends), at most
    ``2 * workers`` items ahead of the one yielded last.
    ``workers <= 1``: in the calling thread, its settings unchanged. An item's exception is raised
    when its turn comes; the items not yet started are then dropped (those running finish first).
    """
    if workers <= 1:
        for item in items:
            yield function(item)
        return
    import torch
    from threadpoolctl import threadpool_limits

    with ExitStack() as stack:
        stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        stack.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(1)
        pool = ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,),
                                  thread_name_prefix="medtransfer-score")
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        ahead: deque[Future] = deque()
        source = iter(items)
        for item in source:
            ahead.append(pool.submit(function, item))
            if len(ahead) >= 2 * workers:
                break
        while ahead:
            result = ahead.popleft().result()
            following = next(source, _END)
            if following is not _END:
                ahead.append(pool.submit(function, following))
            yield result
