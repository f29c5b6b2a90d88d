"""Fixtures shared by every test: temporary storage, users, tokens, the demo upstream.

Tests that need a real service (Redis, PostgreSQL, moto's S3 server, Chromium)
ask `require_service`; it skips with the reason on a laptop without the service,
and fails instead when GENVAULT_REQUIRE_SERVICES=1 (CI), so nothing is skipped there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.test import Client

if TYPE_CHECKING:
    from tests.faults.processes import RedisServer

# Fixtures shared by every test folder: the moto S3 server (`moto_s3`), and an image
# host of the test's own (`image_host`).
pytest_plugins = ["tests.s3_fixtures", "tests.image_host"]

REQUIRE_SERVICES = os.environ.get("GENVAULT_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("GENVAULT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_service(available: bool, why_not: str) -> None:
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing (GENVAULT_REQUIRE_SERVICES=1): {why_not}")
    pytest.skip(why_not)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but GENVAULT_REQUIRE_SERVICES=1: {report.longrepr}"


@pytest.fixture(autouse=True)
def image_storage_root(settings: Any, tmp_path: Path) -> Path:
    """Every test writes images to its own temporary folder, never to media/."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    storages = dict(settings.STORAGES)
    storages["images_local"] = {
        "BACKEND": "storage_backends.backends.local.LocalImageStorage",
        "OPTIONS": {"location": str(root)},
    }
    if settings.STORAGE_MODE == "local":
        storages["images"] = storages["images_local"]
    settings.STORAGES = storages
    return root


@pytest.fixture(autouse=True)
def _seedream_models_after_flush(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush every table, the data migration's models included."""
    marker = request.node.get_closest_marker("django_db")
    wants_transactions = "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction", False)
    )
    if wants_transactions:
        request.getfixturevalue("transactional_db")
        ensure_seedream_models()


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this session's own, which a test may stop (the machine's cannot be)."""
    from tests.faults.processes import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(
        username="staff", password="staff-pass-123", is_staff=True
    )


@pytest.fixture
def plain_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="visitor", password="visitor-pass-123")


@pytest.fixture
def staff_client(staff_user: Any) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def api_token(staff_user: Any) -> str:
    from generations.models import ApiToken

    key = ApiToken.new_key()
    ApiToken.objects.create(user=staff_user, prefix=key[:10], key_hash=ApiToken.hash_key(key))
    return key


@pytest.fixture
def token_client(api_token: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token}")


@pytest.fixture
def demo(settings: Any) -> Iterator[Any]:
    """The bundled demo upstream on a free loopback port, used as Ark (no key set)."""
    from generations.upstream.demo.server import DemoUpstream

    server = DemoUpstream(host="127.0.0.1", port=0)
    server.start()
    settings.ARK_API_KEY = ""
    settings.DEMO_UPSTREAM_URL = server.base_url
    netloc = server.base_url.split("://", 1)[1]
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [netloc]
    try:
        yield server
    finally:
        server.stop()


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else (f"{user}@" if user else "")
    return f"postgres://{auth}{host}:{port}/{db['NAME']}"


def worker_environment(settings: Any, **extra: str) -> dict[str, str]:
    """The environment that makes a child process see this test's database, storage and broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "GENVAULT_TEST_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "GENVAULT_TEST_REDIS_URL": REDIS_URL,
            "DEMO_UPSTREAM_URL": settings.DEMO_UPSTREAM_URL,
            "IMAGE_FETCH_ALLOWED_HOSTS": ",".join(settings.IMAGE_FETCH_ALLOWED_HOSTS),
            "ARK_API_KEY": settings.ARK_API_KEY,
            "STORAGE_MODE": settings.STORAGE_MODE,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A real `celery -A config worker` child process consuming this session's queues."""

    def __init__(
        self,
        settings: Any,
        log_path: Path,
        *,
        concurrency: int = 2,
        queues: list[str] | None = None,
        **extra_env: str,
    ) -> None:
        import subprocess
        import sys

        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--pool",
                "prefork",
                "--queues",
                # As the Procfile's workers, in one: storing first, then derivatives,
                # then background generations.
                ",".join(queues)
                if queues
                else f"{settings.CELERY_TASK_DEFAULT_QUEUE},{settings.DERIVATIVES_QUEUE},"
                f"{settings.GENERATIONS_QUEUE}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                # A node name of its own: RabbitMQ gives each node's control queue to one
                # connection, so two workers on one host must not share the default.
                "--hostname",
                f"worker-{uuid.uuid4().hex[:8]}@%h",
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env=worker_environment(settings, **extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-2000:]}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except Exception:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()

    def kill(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


@pytest.fixture
def celery_worker(
    settings: Any, transactional_db: Any, demo: Any, tmp_path: Path
) -> Iterator[WorkerProcess]:
    """A real Celery worker on Redis, sharing this test's database, storage and demo upstream."""
    require_service(
        settings.CELERY_BROKER_URL.startswith("redis://"),
        f"no Redis at {REDIS_URL} for a real Celery worker",
    )
    ensure_seedream_models()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def wait_for(predicate: Any, *, timeout: float = 30, interval: float = 0.2) -> Any:
    """Poll until predicate() is truthy; return its value or fail saying what was awaited."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(
        f"gave up after {timeout}s waiting for {getattr(predicate, '__name__', 'a condition')}"
    )


def ensure_seedream_models() -> None:
    """Transactional tests flush the tables; put back the models the data migration made."""
    from importlib import import_module

    from django.apps import apps

    for name in ("0002_seed_seedream_models", "0006_seedream_rules_and_new_models"):
        import_module(f"generations.migrations.{name}").create_models(apps, None)
