"""Fixtures shared by every test: temporary storage, users, tokens, the demo upstream.

Tests that need a real service (Redis, PostgreSQL, moto's S3 server, Chromium)
ask `require_service`; it skips with the reason on a laptop without the service,
and fails instead when GENVAULT_REQUIRE_SERVICES=1 (CI), so nothing is skipped there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

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


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="staff", password="staff-pass-123", is_staff=True)


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
    from generations.demo_upstream import DemoUpstream

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
