"""Test settings: fast hashing, a throwaway broker folder, services found by probing."""

import socket
import tempfile
import uuid
from pathlib import Path

from .base import *  # noqa: F403
from .base import (
    ARK_API_KEY,
    DATABASES,
    DEMO_UPSTREAM_APP,
    DEMO_UPSTREAM_URL,
    IMAGE_FETCH_ALLOWED_HOSTS,
    INSTALLED_APPS,
    broker_transport_options,
    env,
    with_demo_host,
)

DEBUG = False
SECRET_KEY = "genvault-tests"  # noqa: S105 - tests only
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]

# The tests talk to the demo upstream, on loopback, wherever no Ark key is set.
INSTALLED_APPS = [*INSTALLED_APPS, DEMO_UPSTREAM_APP]
if not ARK_API_KEY:
    IMAGE_FETCH_ALLOWED_HOSTS = with_demo_host(IMAGE_FETCH_ALLOWED_HOSTS, DEMO_UPSTREAM_URL)

_TEST_VAR = Path(
    env.str("GENVAULT_TEST_VAR_DIR", default=tempfile.mkdtemp(prefix="genvault-test-"))
)
VAR_DIR = _TEST_VAR

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that worker processes started by tests see the rows.
    DATABASES["default"]["TEST"] = {"NAME": str(_TEST_VAR / "test-db.sqlite3")}


def _broker_reachable(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (5672 if parts.scheme.startswith(("amqp", "pyamqp")) else 6379)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# The tests' broker: the Redis of GENVAULT_TEST_REDIS_URL when it answers (always on
# CI), so that worker tests run a real worker on Redis; otherwise the filesystem. A
# test that runs workers on another broker (RabbitMQ) names it in GENVAULT_TEST_BROKER_URL.
TEST_REDIS_URL = env.str("GENVAULT_TEST_REDIS_URL", default="redis://127.0.0.1:6379/0")
TEST_BROKER_URL = env.str("GENVAULT_TEST_BROKER_URL", default=TEST_REDIS_URL)
if env.bool("GENVAULT_REQUIRE_SERVICES", default=False) or _broker_reachable(TEST_BROKER_URL):
    CELERY_BROKER_URL = TEST_BROKER_URL
    CELERY_BROKER_TRANSPORT = None
    CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(TEST_BROKER_URL)
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
# Queues of this test session, so that stray tasks of other runs are never consumed.
CELERY_TASK_DEFAULT_QUEUE = env.str(
    "GENVAULT_TEST_QUEUE", default=f"genvault-test-{uuid.uuid4().hex[:8]}"
)
DERIVATIVES_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-derivatives"
GENERATIONS_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-generations"

if CELERY_BROKER_URL == "filesystem://":
    _queue = _TEST_VAR / "celery" / "queue"
    _queue.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "control_folder": str(_TEST_VAR / "celery" / "control"),
        "store_processed": False,
    }

STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
AXES_ENABLED = env.bool("AXES_ENABLED", default=False)
LOGGING = {"version": 1, "disable_existing_loggers": False}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# Each test process keeps its own cache, whatever the environment says.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# A worker host of the hosts suite names a download folder of its own.
IMAGE_FETCH_TEMP_DIR = env.str("IMAGE_FETCH_TEMP_DIR", default=str(_TEST_VAR / "downloads"))
