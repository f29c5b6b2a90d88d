"""Fixtures of the fault suite: a broker, real Celery workers, our own S3 endpoint.

Each test runs twice, on Redis and on RabbitMQ (`broker`). On Redis, workers consume
this session's queue on a `redis-server` the suite owns, so that a test may stop the
broker; on RabbitMQ, the machine's, which no test stops. This process publishes to the
same broker as the workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import (
    WorkerProcess,
    ensure_seedream_models,
    require_service,
    worker_environment,
)
from tests.faults.processes import (
    GunicornProcess,
    MotoServer,
    RabbitMQBroker,
    RedisServer,
    celery_broker,
    redis_flushall,
)

RABBITMQ_URL = os.environ.get("GENVAULT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

Broker = RedisServer | RabbitMQBroker


def broker_env(broker: Broker) -> dict[str, str]:
    """What points a worker or gunicorn at `broker`."""
    env = {"GENVAULT_TEST_BROKER_URL": broker.url, "CELERY_BROKER_URL": broker.url}
    if isinstance(broker, RedisServer):
        env["GENVAULT_TEST_REDIS_URL"] = broker.url
    return env


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, settings: Any) -> Iterator[Broker]:
    """A running, empty broker with this process's Celery app publishing to it: our own
    Redis, or the machine's RabbitMQ with this session's queues purged."""
    if request.param == "redis":
        private_redis: RedisServer = request.getfixturevalue("private_redis")
        private_redis.start()
        redis_flushall(private_redis.port)
        with celery_broker(private_redis.url):
            yield private_redis
        private_redis.start()  # a test that stopped it leaves it running for the next one
        return
    rabbit = RabbitMQBroker(RABBITMQ_URL)
    require_service(rabbit.answers(), f"no RabbitMQ at {RABBITMQ_URL}")
    queues = (settings.CELERY_TASK_DEFAULT_QUEUE, settings.DERIVATIVES_QUEUE)
    rabbit.purge(*queues)
    try:
        with celery_broker(rabbit.url):
            yield rabbit
    finally:
        rabbit.delete(*queues)  # durable queues named for this session: leave none behind


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    settings: Any, transactional_db: Any, demo: Any, broker: Broker, tmp_path: Path
) -> Iterator[StartWorker]:
    """Start real Celery workers on our broker; each is stopped at the end of the test."""
    ensure_seedream_models()
    started: list[WorkerProcess] = []

    def start(
        *, concurrency: int = 1, queues: list[str] | None = None, **extra_env: str
    ) -> WorkerProcess:
        env = broker_env(broker)
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
    """moto's S3 server of this test, on a port it keeps across a stop and a start.

    moto keeps its buckets in this process, whichever server answers: they are emptied
    first, so that a test never finds the objects of the one before it.
    """
    server = MotoServer()
    server.start()
    requests.post(f"{server.url}/moto-api/reset", timeout=10).raise_for_status()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_gunicorn(
    settings: Any, transactional_db: Any, demo: Any, broker: Broker, tmp_path: Path
) -> Iterator[Callable[..., GunicornProcess]]:
    """Start gunicorn serving this test's database, storage, demo upstream and broker."""
    started: list[GunicornProcess] = []

    def start(*, workers: int = 2, **extra_env: str) -> GunicornProcess:
        env = worker_environment(settings, **broker_env(broker))
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
