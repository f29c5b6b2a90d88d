"""The Celery app: `celery -A config worker` starts a worker that stores images (and, on
the `generations` queue, calls Ark for background generations)."""

import os
import sys
from typing import Any

from celery import Celery
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

try:
    from django.conf import settings

    settings.INSTALLED_APPS  # noqa: B018 - load the settings now: a bad one is one line, not a traceback
except ImproperlyConfigured as exc:
    sys.stderr.write(f"genvault: configuration error: {exc}\n")
    sys.exit(2)

app = Celery("genvault")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, **rest: Any
) -> dict[str, str] | None:
    """Derivatives and background generations go to queues of their own; every other
    task to the default one, storing."""
    if name == "generations.tasks.make_result_derivatives":
        return {"queue": settings.DERIVATIVES_QUEUE}
    if name == "generations.tasks.generate_in_background":
        return {"queue": settings.GENERATIONS_QUEUE}
    return None
