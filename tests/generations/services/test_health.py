"""`/healthz` tells the truth about storing: workers alive, the oldest pending result and
the number at risk, and 503 when results are at risk with no worker to store them."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from generations.models import GenerationResult, WorkerHeartbeat
from tests.conftest import (
    REDIS_URL,
    WorkerProcess,
    ensure_seedream_models,
    require_service,
    wait_for,
)
from tests.factories import GenerationResultFactory

S = GenerationResult.StorageStatus


def heartbeat(
    *, seconds_ago: float, hostname: str = "celery@worker-1", queues: str | None = None
) -> None:
    """A worker's row, as a worker taking the storing queue (by default) writes it."""
    from django.conf import settings

    seen = timezone.now() - timedelta(seconds=seconds_ago)
    WorkerHeartbeat.objects.create(
        hostname=hostname,
        pid=10,
        queues=f",{settings.CELERY_TASK_DEFAULT_QUEUE}," if queues is None else queues,
        started_at=seen,
        seen_at=seen,
    )


def at_risk_result() -> GenerationResult:
    """Pending, with an external URL that dies within the hour."""
    return GenerationResultFactory(
        storage_status=S.PENDING,
        external_url_expires_at=timezone.now() + timedelta(hours=1),
    )


@pytest.mark.django_db
def test_results_at_risk_and_no_worker_alive_answer_503(client: Client) -> None:
    result = at_risk_result()
    GenerationResult.objects.filter(pk=result.pk).update(
        created_at=timezone.now() - timedelta(minutes=10)
    )
    heartbeat(seconds_ago=300)  # a worker that stopped beating five minutes ago

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert (body["workers"], body["atRisk"]) == (0, 1)
    assert 590 <= body["oldestPendingSeconds"] <= 700
    assert (body["database"], body["storage"]) == ("ok", "ok")


@pytest.mark.django_db
def test_a_worker_seen_within_the_minute_makes_results_at_risk_healthy(client: Client) -> None:
    at_risk_result()
    heartbeat(seconds_ago=5)
    heartbeat(seconds_ago=600, hostname="celery@worker-2")  # gone: not counted

    response = client.get("/healthz")

    body = response.json()
    assert (body["workers"], body["atRisk"]) == (1, 1)
    assert response.status_code == (200 if body["broker"] == "ok" else 503)


@pytest.mark.django_db
def test_a_worker_that_only_generates_does_not_count(client: Client, settings: Any) -> None:
    at_risk_result()
    heartbeat(seconds_ago=1, queues=f",{settings.GENERATIONS_QUEUE},")

    response = client.get("/healthz")

    assert (response.status_code, response.json()["workers"]) == (503, 0)


@pytest.mark.django_db
def test_no_worker_and_nothing_at_risk_is_healthy(client: Client) -> None:
    GenerationResultFactory(storage_status=S.STORED)

    response = client.get("/healthz")

    body = response.json()
    assert (body["workers"], body["atRisk"], body["oldestPendingSeconds"]) == (0, 0, None)
    assert response.status_code == (200 if body["broker"] == "ok" else 503)


@pytest.mark.django_db
def test_the_gallery_says_when_no_worker_is_running(staff_client: Client) -> None:
    heartbeat(seconds_ago=120)
    assert "No worker running" in staff_client.get("/gallery/").content.decode()

    heartbeat(seconds_ago=1, hostname="celery@worker-2")
    assert "No worker running" not in staff_client.get("/gallery/").content.decode()


def test_a_real_worker_beats_until_stopped_and_a_killed_one_falls_silent(
    settings: Any, transactional_db: Any, demo: Any, tmp_path: Path, client: Client
) -> None:
    """A worker process writes its heartbeat on start and on its beat; a clean stop removes
    it, and a killed worker's row stops being counted once a minute (here two seconds)
    passes without a beat."""
    require_service(
        settings.CELERY_BROKER_URL.startswith("redis://"), f"no Redis at {REDIS_URL} for a worker"
    )
    ensure_seedream_models()
    settings.WORKER_SEEN_WITHIN_SECONDS = 2
    at_risk_result()

    def alive() -> int:
        return int(client.get("/healthz").json()["workers"])

    stopped = WorkerProcess(settings, tmp_path / "stopped.log", WORKER_HEARTBEAT_SECONDS="1")
    try:
        stopped.wait_ready()
        wait_for(lambda: alive() == 1, timeout=15)
    finally:
        stopped.stop()
    assert not WorkerHeartbeat.objects.exists(), "a clean shutdown removes its row"

    killed = WorkerProcess(settings, tmp_path / "killed.log", WORKER_HEARTBEAT_SECONDS="1")
    try:
        killed.wait_ready()
        wait_for(lambda: alive() == 1, timeout=15)
        first_seen = WorkerHeartbeat.objects.get().seen_at
        wait_for(lambda: WorkerHeartbeat.objects.get().seen_at > first_seen, timeout=10)
        os.killpg(killed.process.pid, signal.SIGKILL)
        killed.process.wait(timeout=10)
    finally:
        killed.stop()
    assert WorkerHeartbeat.objects.count() == 1, "a killed worker cannot remove its row"
    response = wait_for(lambda: (r := client.get("/healthz")).status_code == 503 and r, timeout=10)
    assert response.json()["workers"] == 0
