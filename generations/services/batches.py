"""Walking big tables, and running I/O-bound work over them, at any size.

`ids_newest_first` reads ids a chunk at a time by keyset (`id < last`), so a million
rows never become a million ids in memory and no query gets slower as the walk goes
deeper. `run_bounded` runs work on a few threads with a bounded window of
submissions, so they never become a million futures either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from django.db import close_old_connections
from django.db.models import QuerySet

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 2000


def ids_newest_first(
    queryset: QuerySet[Any], *, limit: int | None = None, chunk_size: int = CHUNK
) -> Iterator[int]:
    """The ids of `queryset`, highest first, read `chunk_size` at a time."""
    queryset = queryset.order_by("-pk")
    last: int | None = None
    left = limit
    while left is None or left > 0:
        page = queryset if last is None else queryset.filter(pk__lt=last)
        size = chunk_size if left is None else min(chunk_size, left)
        ids = list(page.values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield from ids
        last = ids[-1]
        if left is not None:
            left -= len(ids)


def chunked(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _closing_connections(work: Callable[[T], R]) -> Callable[[T], R]:
    def run(item: T) -> R:
        try:
            return work(item)
        finally:
            # Each thread keeps its connection between items (CONN_MAX_AGE) and drops it
            # only when it is broken or old: reconnecting per item is waste.
            close_old_connections()

    return run


def run_bounded(
    work: Callable[[T], R], items: Iterable[T], *, concurrency: int
) -> Iterator[tuple[T, R | Exception]]:
    """`work(item)` for every item on `concurrency` threads; yields (item, its result or
    the exception it raised) as each finishes, in no particular order."""
    run = _closing_connections(work)
    remaining = iter(items)
    pending: dict[Future[R], T] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="genvault") as pool:
        while True:
            for item in remaining:
                pending[pool.submit(run, item)] = item
                if len(pending) >= concurrency * 2:
                    break
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                error = future.exception()
                if error is None:
                    yield item, future.result()
                elif isinstance(error, Exception):
                    yield item, error
                else:
                    raise error
