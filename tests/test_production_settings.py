"""Production settings have no silent fallbacks: each missing variable stops start-up
with one line naming it, and the demo upstream exists there only when asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_settings import manage

PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "x" * 50,
    "DATABASE_URL": "postgres://genvault@127.0.0.1:5432/genvault",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "ARK_API_KEY": "ark-key",
    "REDIS_URL": "",
    "GENVAULT_DEMO": "",
}


def production(tmp_path: Path, **changes: str) -> dict[str, str]:
    return {**PRODUCTION, "GENVAULT_VAR_DIR": str(tmp_path), **changes}


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"CELERY_BROKER_URL": ""}, "CELERY_BROKER_URL"),
        ({"ARK_API_KEY": ""}, "ARK_API_KEY"),
    ],
)
def test_production_refuses_to_start_without_each_variable(
    missing: dict[str, str], variable: str, tmp_path: Path
) -> None:
    completed = manage("check", **production(tmp_path, **missing))
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(
        f"genvault: configuration error: {variable} is required in production"
    )


def test_production_with_everything_set_starts(tmp_path: Path) -> None:
    completed = manage("check", **production(tmp_path))
    assert completed.returncode == 0, completed.stderr


def test_redis_url_serves_as_the_broker(tmp_path: Path) -> None:
    env = production(tmp_path, CELERY_BROKER_URL="", REDIS_URL="redis://127.0.0.1:6379/0")
    assert manage("check", **env).returncode == 0


def test_production_has_no_demo_upstream_unless_asked_for(tmp_path: Path) -> None:
    completed = manage("demo_upstream", "--help", **production(tmp_path))
    assert completed.returncode != 0
    assert "Unknown command: 'demo_upstream'" in completed.stderr

    asked = production(tmp_path, ARK_API_KEY="", GENVAULT_DEMO="1")
    assert manage("demo_upstream", "--help", **asked).returncode == 0


def test_production_never_widens_the_fetch_allow_list_by_itself(tmp_path: Path) -> None:
    show = "from django.conf import settings; print(settings.IMAGE_FETCH_ALLOWED_HOSTS)"
    for env in (
        production(tmp_path, ARK_API_KEY="", GENVAULT_DEMO="1"),
        production(tmp_path),
    ):
        completed = manage("shell", "-c", show, **env)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.strip().splitlines()[-1] == "[]"

    allowed = production(tmp_path, IMAGE_FETCH_ALLOWED_HOSTS="images.internal:8080")
    completed = manage("shell", "-c", show, **allowed)
    assert completed.stdout.strip().splitlines()[-1] == "['images.internal:8080']"


@pytest.mark.parametrize("scheme", ["mongodb", "ftp"])
def test_a_database_url_django_does_not_know_stops_with_one_line(
    scheme: str, tmp_path: Path
) -> None:
    completed = manage("check", **production(tmp_path, DATABASE_URL=f"{scheme}://db/genvault"))
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines() == [
        f"genvault: configuration error: DATABASE_URL has scheme {scheme!r}, not a known database"
    ]
