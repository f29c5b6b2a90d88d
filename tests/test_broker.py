"""A worker given `storing,derivatives` takes what waits to be stored first, on the embedded
default's filesystem broker and on Redis, however many derivatives are queued before."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tests.conftest import REDIS_URL, require_service


def _taken_in_order(connection: Connection, prefix: str) -> list[str]:
    exchange = Exchange(f"{prefix}-exchange", type="direct")
    storing, derivatives = (
        Queue(f"{prefix}-{name}", exchange, routing_key=f"{prefix}-{name}")
        for name in ("storing", "derivatives")
    )
    with connection:
        channel = connection.channel()
        producer = Producer(channel, exchange)
        for queue in (storing, derivatives):
            queue(channel).declare()
        for n in range(3):
            producer.publish(f"derivatives-{n}", routing_key=derivatives.routing_key)
        for n in range(2):
            producer.publish(f"storing-{n}", routing_key=storing.routing_key)
        taken: list[str] = []

        def take(body: Any, message: Any) -> None:
            taken.append(body)
            message.ack()

        # The worker's queues, in the order the Procfile names them; one message at a time.
        with Consumer(channel, [storing, derivatives], callbacks=[take], prefetch_count=1):
            for _ in range(5):
                connection.drain_events(timeout=5)
        for queue in (storing, derivatives):
            queue(channel).delete()
    return taken


def test_the_filesystem_broker_takes_storing_first(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    folder.mkdir()
    connection = Connection(
        "filesystem://",
        transport="config.broker:Transport",
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(tmp_path / "control"),
        },
    )

    taken = _taken_in_order(connection, "order")

    # kombu's filesystem queue orders messages of the same millisecond by a random name.
    assert sorted(taken[:2]) == ["storing-0", "storing-1"]
    assert sorted(taken[2:]) == ["derivatives-0", "derivatives-1", "derivatives-2"]


def test_redis_takes_storing_first() -> None:
    require_service(settings.CELERY_BROKER_URL.startswith("redis://"), f"no Redis at {REDIS_URL}")
    connection = Connection(
        settings.CELERY_BROKER_URL, transport_options=settings.REDIS_TRANSPORT_OPTIONS
    )

    taken = _taken_in_order(connection, f"genvault-test-order-{uuid.uuid4().hex[:8]}")

    assert taken == ["storing-0", "storing-1", "derivatives-0", "derivatives-1", "derivatives-2"]
