"""Shared pieces of the harness: a throwaway environment, child processes, rows of the table.

Each measurement runs in child processes of its own (a fresh Django with its own
database, storage folder and queue), so that the harness never imports Django and
one measurement cannot warm or dirty another's caches.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REDIS_URL = os.environ.get("GENVAULT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("GENVAULT_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
RESULT_PREFIX = "BENCH-RESULT "


@dataclass
class Row:
    """One line of the table: a figure, its side-by-side baseline, and the goal."""

    name: str
    measured: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None
    note: str = ""
    samples: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class BenchEnv:
    """A temporary folder with a SQLite database, a storage root and a queue of our own."""

    def __init__(self, root: Path, name: str, *, demo_url: str, **extra: str) -> None:
        self.dir = root / name
        self.media = self.dir / "media"
        self.var = self.dir / "var"
        self.media.mkdir(parents=True, exist_ok=True)
        self.var.mkdir(parents=True, exist_ok=True)
        self.queue = f"genvault-bench-{name}-{uuid.uuid4().hex[:8]}"
        netloc = demo_url.split("://", 1)[1]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        for variable in ("ARK_API_KEY", "STORAGE_MODE", "REDIS_URL"):
            self.env.pop(variable, None)
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "DATABASE_URL": f"sqlite:///{self.var / 'db.sqlite3'}",
                "MEDIA_ROOT": str(self.media),
                "GENVAULT_VAR_DIR": str(self.var),
                "DEMO_UPSTREAM_URL": demo_url,
                "IMAGE_FETCH_ALLOWED_HOSTS": netloc,
                "CELERY_BROKER_URL": REDIS_URL,
                "GENVAULT_BENCH_QUEUE": self.queue,
                "DEBUG": "0",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(REPO),
            }
        )
        self.env.update(extra)

    def migrate(self) -> None:
        run_checked([PYTHON, "manage.py", "migrate", "--noinput", "--verbosity", "0"], self.env)


def run_checked(command: list[str], env: dict[str, str], *, timeout: float = 300) -> str:
    completed = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])} failed ({completed.returncode}):\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
        )
    return completed.stdout


def run_child(module: str, args: list[str], env: dict[str, str], *, timeout: float) -> Any:
    """Run `python -m bench.<module> ARGS`; return the JSON it printed after RESULT_PREFIX."""
    stdout = run_checked([PYTHON, "-m", f"bench.{module}", *args], env, timeout=timeout)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"bench.{module} printed no result:\n{stdout[-3000:]}")


def report(payload: Any) -> None:
    """What a child prints for the harness: one JSON line, last."""
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


@contextmanager
def loopback_server(
    command: list[str], *, port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`command`, listening on 127.0.0.1:`port`, in a session of its own; yields its URL
    and stops it afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(process)


@contextmanager
def demo_upstream(log_dir: Path) -> Iterator[str]:
    """The bundled demo upstream in a process of its own on a free loopback port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "GENVAULT_VAR_DIR": str(log_dir / "demo-var"),
            "DEBUG": "0",
        }
    )
    env.pop("ARK_API_KEY", None)
    command = [PYTHON, "manage.py", "demo_upstream", "--host", "127.0.0.1", "--port", str(port)]
    with loopback_server(command, port=port, log=log_dir / "demo-upstream.log", env=env) as url:
        yield url


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Stop a child we started (its own session), firmly if it does not listen."""
    import signal

    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def temporary_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="genvault-bench-"))


def django_setup() -> None:
    """For child processes: configure Django from the environment the harness gave us."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
