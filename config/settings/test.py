"""Test settings: fast hashing, a throwaway broker folder, services found by probing."""

import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import DATABASES, env

DEBUG = False
SECRET_KEY = "genvault-tests"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]

_TEST_VAR = Path(env.str("GENVAULT_TEST_VAR_DIR", default=tempfile.mkdtemp(prefix="genvault-test-")))
VAR_DIR = _TEST_VAR

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that worker processes started by tests see the rows.
    DATABASES["default"]["TEST"] = {"NAME": str(_TEST_VAR / "test-db.sqlite3")}

if CELERY_BROKER_URL == "filesystem://":  # noqa: F405
    _queue = _TEST_VAR / "celery" / "queue"
    _queue.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {  # noqa: F405
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "store_processed": False,
    }

STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
AXES_ENABLED = env.bool("AXES_ENABLED", default=False)
LOGGING = {"version": 1, "disable_existing_loggers": False}
