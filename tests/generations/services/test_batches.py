"""Walking a big table in chunks, and bounded concurrent work over it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generations.models import GenerationResult
from generations.services.batches import chunked, ids_newest_first, run_bounded
from tests.factories import GenerationResultFactory

pytestmark = pytest.mark.django_db


def test_the_walk_yields_every_id_once_newest_first_a_chunk_per_query() -> None:
    ids = [GenerationResultFactory().pk for _ in range(7)]

    with CaptureQueriesContext(connection) as queries:
        walked = list(ids_newest_first(GenerationResult.objects.all(), chunk_size=3))

    assert walked == sorted(ids, reverse=True)
    assert len(queries) == 4  # 3 + 3 + 1, then an empty page ends the walk
    assert all("LIMIT 3" in q["sql"] for q in queries.captured_queries)


def test_the_walk_stops_at_its_limit_and_sees_rows_deleted_ahead_of_it() -> None:
    ids = sorted((GenerationResultFactory().pk for _ in range(6)), reverse=True)
    walk = ids_newest_first(GenerationResult.objects.all(), chunk_size=2, limit=5)

    first = [next(walk), next(walk)]
    GenerationResult.objects.filter(pk=ids[3]).delete()  # not reached yet
    rest = list(walk)

    assert first == ids[:2]
    assert rest == [ids[2], ids[4], ids[5]]


def test_bounded_work_never_draws_more_than_twice_its_threads_ahead() -> None:
    drawn = 0
    finished = 0
    most_ahead = 0
    lock = threading.Lock()

    def items() -> Iterator[int]:
        nonlocal drawn, most_ahead
        for number in range(100):
            with lock:
                drawn += 1
                most_ahead = max(most_ahead, drawn - finished)
            yield number

    def work(number: int) -> int:
        nonlocal finished
        if number == 13:
            raise ValueError("unlucky")
        with lock:
            finished += 1
        return number * 2

    outcomes = dict(run_bounded(work, items(), concurrency=3))

    assert {n: v for n, v in outcomes.items() if n != 13} == {
        n: n * 2 for n in range(100) if n != 13
    }
    assert isinstance(outcomes[13], ValueError)
    assert most_ahead <= 3 * 2 + 1


def test_chunked_keeps_the_remainder() -> None:
    assert list(chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]
