"""Fixtures of the fault suite: our own broker, real Celery workers, our own S3 endpoint.

Workers consume this session's queue on a `redis-server` the suite owns, so that a
test may stop the broker; this process publishes to the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkerProcess, ensure_seedream_models, worker_environment
from tests.faults.processes import (
    GunicornProcess,
    MotoServer,
    RedisServer,
    celery_broker,
    redis_flushall,
)


@pytest.fixture
def broker(private_redis: RedisServer) -> Iterator[RedisServer]:
    """Our Redis, running and empty, with this process's Celery app publishing to it."""
    private_redis.start()
    redis_flushall(private_redis.port)
    with celery_broker(private_redis.url):
        yield private_redis
    private_redis.start()  # a test that stopped it leaves it running for the next one


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    settings: Any, transactional_db: Any, demo: Any, broker: RedisServer, tmp_path: Path
) -> Iterator[StartWorker]:
    """Start real Celery workers on our broker; each is stopped at the end of the test."""
    ensure_seedream_models()
    started: list[WorkerProcess] = []

    def start(
        *, concurrency: int = 1, queues: list[str] | None = None, **extra_env: str
    ) -> WorkerProcess:
        env = {"GENVAULT_TEST_REDIS_URL": broker.url, "CELERY_BROKER_URL": broker.url}
        env.update(extra_env)
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(settings, log, concurrency=concurrency, queues=queues, **env)
        started.append(worker)
        worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def moto_endpoint() -> Iterator[MotoServer]:
    """moto's S3 server of this test, on a port it keeps across a stop and a start."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_gunicorn(
    settings: Any, transactional_db: Any, demo: Any, broker: RedisServer, tmp_path: Path
) -> Iterator[Callable[..., GunicornProcess]]:
    """Start gunicorn serving this test's database, storage, demo upstream and broker."""
    started: list[GunicornProcess] = []

    def start(*, workers: int = 2, **extra_env: str) -> GunicornProcess:
        env = worker_environment(
            settings, GENVAULT_TEST_REDIS_URL=broker.url, CELERY_BROKER_URL=broker.url
        )
        env.update(extra_env)
        server = GunicornProcess(env, tmp_path / f"gunicorn-{len(started)}.log", workers=workers)
        started.append(server)
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
