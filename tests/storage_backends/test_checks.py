"""`manage.py check` warns when local storage meets a broker other machines can reach."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from storage_backends.checks import local_storage_with_a_shared_broker


@pytest.mark.parametrize(
    ("broker", "warned"),
    [
        ("redis://10.0.4.2:6379/0", True),
        ("amqp://guest:guest@rabbit.internal:5672//", True),
        ("redis://127.0.0.1:6379/0", False),
        ("amqp://guest:guest@localhost:5672//", False),
        ("redis://[::1]:6379/0", False),
        ("filesystem://", False),
    ],
)
def test_local_storage_with_a_broker_on_the_network_is_warned(
    settings: Any, broker: str, warned: bool
) -> None:
    settings.STORAGE_MODE = "local"
    settings.CELERY_BROKER_URL = broker
    assert bool(local_storage_with_a_shared_broker()) is warned


def test_s3_storage_with_a_broker_on_the_network_is_not_warned(settings: Any) -> None:
    settings.STORAGE_MODE = "s3"
    settings.CELERY_BROKER_URL = "redis://10.0.4.2:6379/0"
    assert local_storage_with_a_shared_broker() == []


def test_manage_py_check_prints_the_warning(settings: Any) -> None:
    settings.STORAGE_MODE = "local"
    settings.CELERY_BROKER_URL = "redis://10.0.4.2:6379/0"
    err = StringIO()
    call_command("check", stderr=err, stdout=StringIO())
    assert "storage_backends.W001" in err.getvalue()
    assert "STORAGE_MODE=local with a broker other hosts can reach (10.0.4.2)" in err.getvalue()
