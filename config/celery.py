"""The Celery app: `celery -A config worker` starts a worker that stores images."""

import os
import sys

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
