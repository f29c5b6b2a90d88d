"""The Celery app: `celery -A config worker` starts a worker that stores images."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("genvault")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
