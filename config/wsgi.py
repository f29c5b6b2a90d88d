"""WSGI entry point for gunicorn: `gunicorn config.wsgi`."""

import os
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

try:
    application = get_wsgi_application()
except ImproperlyConfigured as exc:
    # One clear line naming the variable, not a traceback.
    sys.stderr.write(f"genvault: configuration error: {exc}\n")
    sys.exit(2)
