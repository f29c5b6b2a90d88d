"""Start-up settings: a wrong or missing value stops start-up with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        ({"TRUSTED_PROXIES": "10.0.0.1,proxy.internal"}, "TRUSTED_PROXIES"),
        ({"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"),
        ({"STORAGE_LOCAL_ACCEL_REDIRECT": "protected"}, "STORAGE_LOCAL_ACCEL_REDIRECT"),
        ({"STORAGE_LOCAL_ACCEL_REDIRECT": "/media/../etc/"}, "STORAGE_LOCAL_ACCEL_REDIRECT"),
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


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "a-production-secret-of-fifty-characters-or-more-0123456789-xyz",
    "ALLOWED_HOSTS": "genvault.example.test",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "ARK_API_KEY": "ark-key",
}


def test_check_deploy_under_production_settings_asks_for_neither_hsts_nor_https(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    completed = manage(
        "check", "--deploy", GENVAULT_VAR_DIR=str(tmp_path), DATABASE_URL=database, **PRODUCTION
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "security.W004" not in output  # SECURE_HSTS_SECONDS
    assert "security.W008" not in output  # SECURE_SSL_REDIRECT

    # An operator who cannot serve https yet turns both off, and is told so.
    completed = manage(
        "check",
        "--deploy",
        GENVAULT_VAR_DIR=str(tmp_path),
        DATABASE_URL=database,
        SECURE_HSTS_SECONDS="0",
        SECURE_SSL_REDIRECT="false",
        **PRODUCTION,
    )
    output = completed.stdout + completed.stderr
    assert "security.W004" in output and "security.W008" in output


# Requests through the whole middleware stack under production settings, in a process
# of their own: what a browser and a load balancer get in front of the proxy.
_REQUESTS = """
import json, sys
import django
django.setup()
from django.test import Client
answers = []
for path, headers in json.loads(sys.argv[1]):
    response = Client(**headers).get(path, HTTP_HOST="genvault.example.test")
    answers.append([response.status_code, response.get("Location"),
                    response.get("Strict-Transport-Security")])
print(json.dumps(answers))
"""


def production_get(tmp_path: Path, *requests: tuple[str, dict[str, str]]) -> list[list[Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "DATABASE_"))}
    env.update(
        PRODUCTION,
        GENVAULT_VAR_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        TRUSTED_PROXIES="10.0.0.1",
    )
    completed = subprocess.run(
        [sys.executable, "-c", _REQUESTS, json.dumps(requests)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_production_sends_plain_http_to_https_but_not_what_the_proxy_says_is_https(
    tmp_path: Path,
) -> None:
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    plain, through_tls, probe, probe_direct = production_get(
        tmp_path,
        ("/accounts/login/", proxy),
        ("/accounts/login/", {**proxy, "HTTP_X_FORWARDED_PROTO": "https"}),
        ("/healthz", proxy),
        ("/healthz", {"REMOTE_ADDR": "10.0.0.77"}),
    )

    assert plain[:2] == [301, "https://genvault.example.test/accounts/login/"]
    # The proxy ended TLS and said so: the page itself, no redirect loop, and HSTS.
    assert through_tls == [200, None, "max-age=31536000"]
    # A load balancer probing over plain http gets the health answer, not a redirect.
    for answer in (probe, probe_direct):
        assert answer[0] in (200, 503) and answer[1] is None
