"""Real processes the fault and security suites start and stop on loopback.

A `redis-server` of our own (the shared one cannot be stopped), moto's S3 server on
a port we can stop and start again, gunicorn, nginx in front of it, and a way to point
this process's Celery app at our broker. Every wait is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
REDIS_SERVER = "/usr/bin/redis-server"
# Debian puts nginx in /usr/sbin, which a user's PATH may lack.
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Any, *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"gave up after {timeout}s waiting for {what}")


class RedisServer:
    """A throwaway redis-server on a fixed loopback port: stop it, start it again."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.running:
            return
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        wait_until(lambda: not port_open(self.port), timeout=5, what="redis port to close")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class RabbitMQBroker:
    """The machine's RabbitMQ. It is shared, so a test never stops it; it only empties
    this session's queues (their names are the session's own) before and after."""

    def __init__(self, url: str) -> None:
        self.url = url

    def answers(self) -> bool:
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception:
            return False
        return True

    def purge(self, *queues: str) -> None:
        from amqp.exceptions import NotFound
        from kombu import Connection

        with Connection(self.url, connect_timeout=5) as conn:
            for name in queues:
                channel = conn.channel()
                try:
                    channel.queue_purge(name)
                except NotFound:
                    pass  # not declared yet: nothing in it
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()

    def delete(self, *queues: str) -> None:
        from kombu import Connection

        with Connection(self.url, connect_timeout=5) as conn:
            for name in queues:
                channel = conn.channel()
                with contextlib.suppress(Exception):
                    channel.queue_delete(name)
                with contextlib.suppress(Exception):
                    channel.close()


class MotoServer:
    """moto's S3 server on a fixed loopback port; its buckets outlive a stop and start.

    moto keeps its state in this process, so a bucket made before `stop()` is still
    there after `start()`: an endpoint that went away and came back.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_until(lambda: port_open(self.port), timeout=10, what="moto server")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        wait_until(lambda: not port_open(self.port), timeout=10, what="moto port to close")


def _reset_connections(app: Any) -> None:
    """Drop every pooled broker connection: kombu keeps its pools in a global registry."""
    from kombu import pools

    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


@contextlib.contextmanager
def celery_broker(url: str) -> Iterator[Any]:
    """Point this process's Celery app (what `apply_async` publishes to) at `url`."""
    from config.celery import app
    from config.settings.base import broker_transport_options

    saved = {
        "broker_url": app.conf.broker_url,
        "broker_transport": app.conf.broker_transport,
        "broker_transport_options": app.conf.broker_transport_options,
    }
    app.conf.broker_url = url
    # What production uses with this broker, whatever transport the test settings chose.
    app.conf.broker_transport = None
    app.conf.broker_transport_options = broker_transport_options(url)
    _reset_connections(app)
    try:
        yield app
    finally:
        _reset_connections(app)
        app.conf.update(saved)


class GunicornProcess:
    """`gunicorn config.wsgi` on a free loopback port, with a test's environment."""

    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int = 2) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--timeout",
                "60",
            ],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            return port_open(self.port)

        wait_until(ready, timeout=timeout, what="gunicorn")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


class NginxProcess:
    """Debian's nginx on a free loopback port, running `server_block` (the README's).

    Everything it writes (pid, logs, temporary files) stays under `prefix`. Run as
    root, its workers run as root too: the default user (nobody) could not read a
    test's storage folder.
    """

    def __init__(self, prefix: Path, server_block: str) -> None:
        self.port = free_port()
        self.prefix = prefix
        self.log_path = prefix / "error.log"
        prefix.mkdir(parents=True, exist_ok=True)
        temp_paths = "\n".join(
            f"    {kind}_temp_path {prefix / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root root;" if os.geteuid() == 0 else ""
        config = prefix / "nginx.conf"
        config.write_text(
            f"""
{user}
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {self.log_path} info;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {prefix / "access.log"};
{temp_paths}
{server_block.replace("listen 80;", f"listen 127.0.0.1:{self.port};")}
}}
"""
        )
        self._output = (prefix / "output.log").open("wb")
        self.process = subprocess.Popen(
            [
                NGINX,
                *("-p", str(prefix), "-e", str(self.log_path), "-c", str(config)),
                *("-g", "daemon off;"),
            ],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 15) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                output = (self.prefix / "output.log").read_text()
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"nginx exited: {output[-2000:]} {log[-2000:]}")
            return port_open(self.port)

        wait_until(ready, timeout=timeout, what="nginx")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # nginx's fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._output.close()


def redis_flushall(port: int) -> None:
    """Empty our own Redis, so that no test consumes tasks another test left behind."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        assert sock.recv(16).startswith(b"+OK")
