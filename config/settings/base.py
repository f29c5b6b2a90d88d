"""Settings shared by every environment, read once from the environment through `env`."""

from __future__ import annotations

import importlib.util
import ipaddress
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from storage_backends.conf import image_storages_from_env, local_accel_redirect_from_env

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

# Git-ignored folder for the embedded default: SQLite file, Celery's filesystem
# broker and beat schedule.
VAR_DIR = Path(env.str("GENVAULT_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env.str("SECRET_KEY", default="genvault-dev-only-not-for-production")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "ninja",  # the API docs page's assets, served from here rather than a CDN
    "storage_backends",
    "generations",
    "gallery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database_from_url(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for `url`; one line naming DATABASE_URL when it is not one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # django-environ warns, then returns no engine
        config = dict(environ.Env.db_url_config(url))
    engine = str(config.get("ENGINE") or "")
    if not engine or importlib.util.find_spec(engine.split(".")[0]) is None:
        scheme = urlsplit(url).scheme or "(none)"
        raise ImproperlyConfigured(f"DATABASE_URL has scheme {scheme!r}, not a known database")
    return config


DATABASES = {
    "default": _database_from_url(
        env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web server and worker write to one file: take the write lock up front and
    # wait for it instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
# Keep connections between requests: opening one costs more than serving a 304.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The JSON API takes bodies up to 16 MiB (a reference image as a data: URI); Django's
# 2.5 MB default would answer larger ones with an HTML 400 before the API sees them.
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024 + 64 * 1024

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "gallery:index"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Image storage -----------------------------------------------------------
MEDIA_ROOT = env.str("MEDIA_ROOT", default=str(BASE_DIR / "media"))
STORAGE_MODE, _image_storages = image_storages_from_env(env, media_root=MEDIA_ROOT)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    **_image_storages,
}
# Behind nginx: its `internal` location aliasing MEDIA_ROOT (README), which then sends
# the bytes of local objects itself, ranges and revalidation included.
STORAGE_LOCAL_ACCEL_REDIRECT = local_accel_redirect_from_env(env)
STORAGE_LEASE_SECONDS = env.int("STORAGE_LEASE_SECONDS", default=600)
# Each worker writes a heartbeat row this often; one not seen for a minute counts as
# gone (`/healthz`'s `workers`, the gallery's "no worker running").
WORKER_HEARTBEAT_SECONDS = env.int("WORKER_HEARTBEAT_SECONDS", default=20)
WORKER_SEEN_WITHIN_SECONDS = env.int("WORKER_SEEN_WITHIN_SECONDS", default=60)
STORAGE_SWEEP_SECONDS = env.int("STORAGE_SWEEP_SECONDS", default=300)
# The sweep leaves results younger than this to the task queued when they were made.
STORAGE_SWEEP_SETTLE_SECONDS = env.int("STORAGE_SWEEP_SETTLE_SECONDS", default=60)
STORAGE_MAX_ATTEMPTS = env.int("STORAGE_MAX_ATTEMPTS", default=5)

# --- Downloads and share links ------------------------------------------------
# The most results one ZIP takes (a selection, or every result a filter matches).
DOWNLOAD_MAX_RESULTS = env.int("DOWNLOAD_MAX_RESULTS", default=500)
# How long a share link lives unless asked otherwise, and the longest it may.
SHARE_DEFAULT_SECONDS = env.int("SHARE_DEFAULT_SECONDS", default=7 * 24 * 3600)
SHARE_MAX_SECONDS = env.int("SHARE_MAX_SECONDS", default=90 * 24 * 3600)

# --- Upstream: Ark, or the bundled demo upstream when no key is set -----------
ARK_API_KEY = env.str("ARK_API_KEY", default="")
ARK_BASE_URL = env.str("ARK_BASE_URL", default="https://ark.cn-beijing.volces.com/api/v3")
ARK_CONNECT_TIMEOUT = env.float("ARK_CONNECT_TIMEOUT", default=10.0)
ARK_READ_TIMEOUT = env.float("ARK_READ_TIMEOUT", default=120.0)
# One try of an Ark call that answers at once, however slowly the answer trickles in (the
# read timeout restarts with every byte). A streamed call has the read timeout between
# its events instead.
ARK_TOTAL_TIMEOUT = env.float("ARK_TOTAL_TIMEOUT", default=180.0)
# Retries of what may clear up (rate limits, an overloaded or failing service, a
# connection that could not be made): at most this many, the first after
# ARK_RETRY_BACKOFF_SECONDS (doubling, at most 30 s) or after Ark's Retry-After, and none
# starting later than ARK_RETRY_BUDGET_SECONDS after the first try. Ark's rate limits
# count per minute.
ARK_MAX_RETRIES = env.int("ARK_MAX_RETRIES", default=5)
ARK_RETRY_BACKOFF_SECONDS = env.float("ARK_RETRY_BACKOFF_SECONDS", default=2.0)
ARK_RETRY_BUDGET_SECONDS = env.float("ARK_RETRY_BUDGET_SECONDS", default=120.0)
# A generation being called holds a lease, renewed every quarter of it while its
# process lives; a generation whose lease ran out (its process died) is marked
# interrupted by a sweep every GENERATION_SWEEP_SECONDS, keeping what it received.
GENERATION_LEASE_SECONDS = env.int("GENERATION_LEASE_SECONDS", default=120)
GENERATION_SWEEP_SECONDS = env.int("GENERATION_SWEEP_SECONDS", default=60)
# How long a background generation may wait in its queue for a worker; later, it is
# marked interrupted without calling Ark (no one is waiting for it any more).
GENERATION_QUEUE_SECONDS = env.int("GENERATION_QUEUE_SECONDS", default=3600)
# A background generation's task may run this long (a group of 15 at 4K takes minutes);
# shorter than the Redis visibility timeout (an hour) and RabbitMQ's consumer timeout (30
# minutes), so that a task still running is never delivered again.
GENERATION_TASK_TIME_LIMIT = env.int("GENERATION_TASK_TIME_LIMIT", default=1500)
DEMO_UPSTREAM_URL = env.str("DEMO_UPSTREAM_URL", default="http://127.0.0.1:8001").rstrip("/")
DEMO_UPSTREAM_URL_TTL = env.int("DEMO_UPSTREAM_URL_TTL", default=24 * 3600)

# --- Fetching images on a user's behalf ---------------------------------------
IMAGE_FETCH_MAX_BYTES = env.int("IMAGE_FETCH_MAX_BYTES", default=50 * 1024 * 1024)
# Seedream's largest output is 4096x4096 (16,777,216 pixels), with a little room: every
# pixel of a PNG costs a worker 4 bytes to decode, however small the file.
IMAGE_FETCH_MAX_PIXELS = env.int("IMAGE_FETCH_MAX_PIXELS", default=17_000_000)
# Downloads stream here before they are checked and written; the sweep removes what a
# killed worker left behind.
IMAGE_FETCH_TEMP_DIR = env.str(
    "IMAGE_FETCH_TEMP_DIR", default=str(Path(tempfile.gettempdir()) / "genvault-fetch")
)


def _fetch_timeouts(value: str) -> tuple[float, float]:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers = [min(10.0, numbers[0]), numbers[0]]
    if len(numbers) != 2 or min(numbers) <= 0:
        raise ImproperlyConfigured(
            f"IMAGE_FETCH_TIMEOUT must be 'TOTAL' or 'CONNECT,TOTAL' in seconds, not {value!r}"
        )
    return numbers[0], numbers[1]


IMAGE_FETCH_CONNECT_TIMEOUT, IMAGE_FETCH_TOTAL_TIMEOUT = _fetch_timeouts(
    env.str("IMAGE_FETCH_TIMEOUT", default="10,60")
)
IMAGE_FETCH_ALLOWED_HOSTS = [
    h.strip().lower() for h in env.list("IMAGE_FETCH_ALLOWED_HOSTS", default=[])
]


# The demo upstream is a development and test server: only the settings that want it
# (local, test, production with GENVAULT_DEMO=1) install its app.
DEMO_UPSTREAM_APP = "generations.upstream.demo"


def with_demo_host(allowed_hosts: list[str], demo_url: str) -> list[str]:
    """The fetch allow-list plus the demo upstream's own host:port, which serves over
    plain http on loopback: the embedded default and the tests fetch from it."""
    netloc = urlsplit(demo_url).netloc.lower()
    return allowed_hosts if not netloc or netloc in allowed_hosts else [*allowed_hosts, netloc]


# --- Celery --------------------------------------------------------------------
REDIS_TRANSPORT_OPTIONS: dict[str, object] = {
    # A worker reads its queues in the order it names them: storing, then derivatives.
    "queue_order_strategy": "priority",
    # Longer than any retry countdown, so a late-acked task is not redelivered
    # while it legitimately waits.
    "visibility_timeout": 3600,
    # Publishing gives up at the first refused connection instead of retrying for
    # the connection timeout: a request must not wait on a broker that is down
    # (its results stay pending and the sweep queues them later).
    "max_retries": 0,
    "socket_connect_timeout": 3,
    "socket_timeout": 10,
}
# RabbitMQ (`amqp://`): publishing also gives up at once when the broker is down, and
# waits for the broker's confirm, so a task the request saw published is on the broker.
# A worker taking both queues reads them in turn there (AMQP has no order across
# queues): give storing workers of their own (`-Q storing`) when derivatives pile up.
AMQP_TRANSPORT_OPTIONS: dict[str, object] = {"max_retries": 0, "confirm_publish": True}


def broker_transport_options(url: str) -> dict[str, object]:
    """The transport options production uses for a network broker at `url`."""
    scheme = url.split("://", 1)[0].lower()
    amqp = scheme in {"amqp", "amqps", "pyamqp"}
    return dict(AMQP_TRANSPORT_OPTIONS if amqp else REDIS_TRANSPORT_OPTIONS)


CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=env.str("REDIS_URL", default=""))
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "filesystem://"
    # kombu's filesystem transport, reading the queues in order: storing, then derivatives.
    CELERY_BROKER_TRANSPORT: str | None = "config.broker:Transport"
    _queue_dir = VAR_DIR / "celery" / "queue"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT = None  # the URL's own
    CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL)
CELERY_BROKER_CONNECTION_TIMEOUT = 3
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_PUBLISH_RETRY = False
# Three queues, consumed in this order by a worker that takes them all
# (`-Q storing,derivatives,generations`): storing makes an image safe in milliseconds;
# its derivatives (the full decode that proves it whole, the thumbnail:
# `generations.tasks.make_result_derivatives`) cost ten times more CPU and wait behind
# any storing; background generations (`generations.tasks.generate_in_background`) wait
# on Ark for minutes, so the Procfile gives them a worker of their own, and a slot held
# by a long generation never holds up storing.
CELERY_TASK_DEFAULT_QUEUE = "storing"
DERIVATIVES_QUEUE = "derivatives"
GENERATIONS_QUEUE = "generations"
CELERY_TASK_ROUTES = ["config.celery.route_task"]
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "sweep-unstored-images": {
        "task": "generations.tasks.sweep_unstored_images",
        "schedule": float(STORAGE_SWEEP_SECONDS),
    },
    "sweep-interrupted-generations": {
        "task": "generations.tasks.sweep_interrupted_generations",
        "schedule": float(GENERATION_SWEEP_SECONDS),
    },
}

# --- Cache (the gallery's header counts) -----------------------------------------
# Shared through Redis when there is one, so that every web process sees a count
# refreshed by another; in-process memory on the embedded default.
_cache_redis = env.str("CACHE_URL", default=env.str("REDIS_URL", default=""))
if _cache_redis:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _cache_redis,
            "KEY_PREFIX": "genvault",
            "TIMEOUT": 300,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Login throttling ----------------------------------------------------------
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True


def _trusted_proxies(entries: list[str]) -> list[str]:
    networks = []
    for entry in entries:
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES must be comma-separated addresses or CIDR ranges, not {entry!r}"
            ) from None
    return networks


# Behind a reverse proxy every request comes from the proxy: throttling on its address
# would lock a user out for everyone behind it. The client's address is then read from
# X-Forwarded-For, but only when the request comes from one of these addresses or CIDR
# ranges (none by default: the header is ignored, for a client must not choose its own
# address).
TRUSTED_PROXIES = _trusted_proxies(env.list("TRUSTED_PROXIES", default=[]))
AXES_CLIENT_IP_CALLABLE = "config.client_address.client_address"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"axes": {"level": "WARNING"}},
}
