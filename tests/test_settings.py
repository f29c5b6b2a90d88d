"""Start-up settings: a wrong or missing value stops start-up with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STORAGE_", "DJANGO_", "DATABASE_"))
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"STORAGE_MODE": "s3"}, "STORAGE_S3_BUCKET"),
        ({"STORAGE_MODE": "s3", "STORAGE_S3_BUCKET": "b"}, "STORAGE_S3_ACCESS_KEY_ID"),
        ({"STORAGE_MODE": "floppy"}, "STORAGE_MODE"),
        ({"STORAGE_S3_ENDPOINT": "minio:9000"}, "STORAGE_S3_ENDPOINT"),
        ({"IMAGE_FETCH_TIMEOUT": "soon"}, "IMAGE_FETCH_TIMEOUT"),
        ({"DJANGO_SETTINGS_MODULE": "config.settings.production", "SECRET_KEY": ""}, "SECRET_KEY"),
    ],
)
def test_bad_setting_stops_start_up_with_one_line(
    env: dict[str, str], variable: str, tmp_path: Path
) -> None:
    env.setdefault("GENVAULT_VAR_DIR", str(tmp_path))
    completed = manage("check", **env)
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert variable in lines[0]
    assert "Traceback" not in completed.stderr


def test_s3_mode_with_everything_set_starts(tmp_path: Path) -> None:
    completed = manage(
        "check",
        STORAGE_MODE="s3",
        STORAGE_S3_BUCKET="images",
        STORAGE_S3_ACCESS_KEY_ID="key",
        STORAGE_S3_SECRET_ACCESS_KEY="secret",
        STORAGE_S3_ENDPOINT="http://127.0.0.1:9",
        GENVAULT_VAR_DIR=str(tmp_path),
    )
    assert completed.returncode == 0, completed.stderr


def test_a_worker_with_a_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "DJANGO_"))}
    env.update(STORAGE_MODE="s3", GENVAULT_VAR_DIR=str(tmp_path))
    completed = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines() == [
        "genvault: configuration error: STORAGE_S3_BUCKET is required when STORAGE_MODE=s3"
    ]
