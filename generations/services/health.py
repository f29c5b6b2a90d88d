"""What `/healthz` reports: each part reachable, workers alive, and how far storing is
behind (the oldest pending result, and those whose external URL dies soon).

The answer is unhealthy when a part is down, or when results are at risk and no worker
is alive to store them: a load balancer or a pager can act on that, where "the web
process answers" alone would say ok while images drift toward their deadline.
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone

from storage_backends.images import check_storage

from ..models import GenerationResult, WorkerHeartbeat


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return "unavailable"
    return "ok"


def check_broker() -> str:
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        return "unavailable"
    return "ok"


def storing_backlog() -> dict[str, Any]:
    """Storing workers seen within a minute, the oldest pending result's age in seconds (None:
    none pending) and the number at risk. Three indexed queries, whatever the table's
    size: ids grow with time, so the oldest pending is the lowest id of that status."""
    oldest = (
        GenerationResult.objects.with_image()
        .filter(storage_status=GenerationResult.StorageStatus.PENDING)
        .order_by("id")
        .values_list("created_at", flat=True)
        .first()
    )
    return {
        "workers": WorkerHeartbeat.objects.alive().storing().count(),
        "oldestPendingSeconds": (
            None if oldest is None else round((timezone.now() - oldest).total_seconds(), 1)
        ),
        "atRisk": GenerationResult.objects.at_risk().count(),
    }


def health_report() -> tuple[dict[str, Any], bool]:
    """The report and whether it is healthy."""
    report: dict[str, Any] = {
        "database": check_database(),
        "storage": check_storage(),
        "broker": check_broker(),
    }
    healthy = all(value == "ok" for value in report.values())
    if report["database"] == "ok":
        try:
            report.update(storing_backlog())
        except DatabaseError:  # reachable, but not migrated (or not ours)
            report["database"] = "unavailable"
            return report, False
        if report["atRisk"] and not report["workers"]:
            healthy = False
    return report, healthy
