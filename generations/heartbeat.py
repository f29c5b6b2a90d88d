"""Workers tell the database they are alive, so that health and the gallery can say
when nothing is storing images.

A thread in each worker's main process writes its `WorkerHeartbeat` row on start and
every `WORKER_HEARTBEAT_SECONDS`, and deletes it on a clean shutdown. Celery's own
heartbeats travel as broker events that only a listener sees, and a remote-control
ping costs every health check a broadcast and a wait; a row costs one indexed query and
reads the same on Redis, RabbitMQ and the embedded default's filesystem broker.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import connections
from django.utils import timezone

from .models import WorkerHeartbeat

logger = logging.getLogger(__name__)

_stop = threading.Event()


# Rows of workers that died without a clean shutdown go after a day unseen.
FORGET_AFTER = timedelta(days=1)


def beat(*, hostname: str, queues: str, started_at: Any) -> None:
    """Write this worker's row now (one upsert), and forget long-dead workers."""
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        pid=os.getpid(),
        defaults={"queues": queues[:255], "started_at": started_at, "seen_at": now},
    )
    WorkerHeartbeat.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()


def _beat_until_stopped(hostname: str, queues: str) -> None:
    started_at = timezone.now()
    while True:
        try:
            beat(hostname=hostname, queues=queues, started_at=started_at)
        except Exception as exc:  # the database away: the row goes stale, which is the truth
            logger.warning("worker heartbeat not written: %s", exc)
        finally:
            # A fresh connection each beat, so a restarted database is met anew.
            connections.close_all()
        if _stop.wait(settings.WORKER_HEARTBEAT_SECONDS):
            return


@worker_ready.connect
def _start_beating(sender: Any, **kwargs: Any) -> None:
    hostname = str(sender.hostname)
    try:
        # Comma on each side of every name, so one queue is found by `,name,`.
        queues = "".join(f",{q.name}" for q in sender.task_consumer.queues) + ","
    except Exception:
        queues = ""
    _stop.clear()
    threading.Thread(
        target=_beat_until_stopped, args=(hostname, queues), name="genvault-heartbeat", daemon=True
    ).start()


@worker_shutdown.connect
def _stop_beating(sender: Any, **kwargs: Any) -> None:
    _stop.set()
    try:
        WorkerHeartbeat.objects.filter(
            hostname=str(getattr(sender, "hostname", sender)), pid=os.getpid()
        ).delete()
    except Exception as exc:
        logger.warning("worker heartbeat not removed: %s", exc)
    finally:
        connections.close_all()
