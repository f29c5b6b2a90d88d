"""genvault spread over test hosts: each service a real process in a host of its own.

- `services`: a PostgreSQL of the test's own (initdb into a temporary folder, listening
  on the host's address only), the broker (a `redis-server` keeping nothing on disk,
  or a RabbitMQ node of the test's own), moto's S3 server;
- `upstream`: the demo upstream (`manage.py demo_upstream`), standing in for Ark;
- `web`: gunicorn;
- `worker-1`, `worker-2`: a Celery worker each, with a temporary download folder of
  its own. Storage is S3: no folder is shared between hosts.

The test process reaches the hosts through the network's root-side veth: it calls the
API on gunicorn, reads rows with plain SQL, asks the demo upstream what it served, and
serves there the S3 proxy that makes the endpoint slow (`S3Front`).
The final checks run inside the web host, with the hosts' own settings
(`tests.hosts.check_invariants`). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import boto3
import psycopg
import redis
import requests
from botocore.config import Config

from tests.faults.processes import wait_until
from tests.hosts.netns import Host, Network

REPO = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
# Debian's PostgreSQL binaries, of the newest version installed.
PG_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    default=Path("/usr/lib/postgresql/15/bin"),
)
REDIS_SERVER = "/usr/bin/redis-server"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
S3_ACCESS_KEY = "genvault-hosts-key"
S3_SECRET_KEY = "genvault-hosts-secret"
BUCKET = "genvault-hosts"
API_TOKEN_HEADER = "Authorization"

PG_PORT = 5432
REDIS_PORT = 6379
RABBITMQ_PORT = 5672
MOTO_PORT = 5000
DEMO_PORT = 8001
WEB_PORT = 8000


def rabbitmq_unavailable() -> str | None:
    if not Path(RABBITMQ_SERVER).exists():
        return f"no RabbitMQ server at {RABBITMQ_SERVER} (apt-get install rabbitmq-server)"
    return None


def postgres_unavailable() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL server binaries at {PG_BIN} (apt-get install postgresql)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` user to run PostgreSQL as"
    if not Path(REDIS_SERVER).exists():
        return f"no redis-server at {REDIS_SERVER}"
    return None


def port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


class HostProcess:
    """A long-running program in a host, with its output in a log file."""

    def __init__(self, host: Host, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.host = host
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = self.host.popen(self.argv, env=self.env, log=self._log, cwd=REPO)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_port(self, port: int, *, timeout: float = 30) -> None:
        def ready() -> bool:
            if not self.running:
                raise RuntimeError(
                    f"{self.argv[0]} exited in {self.host.name}: {self.log()[-2000:]}"
                )
            return port_open(self.host.address, port)

        wait_until(ready, timeout=timeout, what=f"{self.argv[0]} on {self.host.name}:{port}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, *, timeout: float = 15) -> None:
        if self.running:
            assert self.process is not None
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


class S3Front:
    """An HTTP proxy in front of moto's S3 server, in the test process, on the network's
    root-side address: every answer `delay` seconds late, and the first `slowdowns[key]`
    PUTs of an object key answered `503 SlowDown`, as S3 does when a prefix is busy."""

    def __init__(self, network: Network, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.delay = 0.0
        self.slowdowns: dict[str, int] = {}
        self.puts: dict[str, int] = {}
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return body
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                key = urlsplit(self.path).path.split("/", 2)[-1]
                time.sleep(front.delay)
                if self.command == "PUT":
                    with front._lock:
                        front.puts[key] = front.puts.get(key, 0) + 1
                        refuse = front.puts[key] <= front.slowdowns.get(key, 0)
                    if refuse:
                        self._send(503, SLOW_DOWN, {"Content-Type": "application/xml"})
                        return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("transfer-encoding", "content-length", "connection")
                }
                connection = http.client.HTTPConnection(
                    front.upstream.hostname, front.upstream.port, timeout=30
                )
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    answer = connection.getresponse()
                    payload = answer.read()
                    self._send(answer.status, payload, dict(answer.getheaders()))
                finally:
                    connection.close()

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer((network.gateway, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{network.gateway}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>genvault-hosts</RequestId></Error>"
)


class Tmpfs:
    """A small tmpfs mounted at a folder of the test's own: a disk that fills up, and
    whose size may be changed while it is mounted (in every host that sees it)."""

    def __init__(self, path: Path, *, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            check=True,
            timeout=10,
        )

    def resize(self, size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(self.path)], check=True, timeout=10
        )

    def files(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir())

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, timeout=10)


class Postgres:
    """A PostgreSQL cluster of the test's own in `host`: fast to make, restartable."""

    def __init__(self, host: Host) -> None:
        self.host = host
        # The postgres user cannot enter pytest's root-only temporary folders.
        self.root = Path(tempfile.mkdtemp(prefix="gv-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        try:
            self._init()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _init(self) -> None:
        host = self.host
        postgres = pwd.getpwnam("postgres")
        os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self._as_postgres(
            [
                *(str(PG_BIN / "initdb"), "-D", str(self.data)),
                *("-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"),
            ],
            timeout=60,
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{host.address}'\nport = {PG_PORT}\n"
                f"unix_socket_directories = '{self.root}'\n"
                # A test's database: durable across a restart, not across a power cut.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 100\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {host.network.subnet} trust\n")

    @property
    def url(self) -> str:
        return f"postgres://postgres@{self.host.address}:{PG_PORT}/genvault"

    def _as_postgres(self, argv: list[str], *, timeout: float) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
        self.host.run([RUNUSER, "-u", "postgres", "--", *argv], env=env, timeout=timeout)

    def _pg_ctl(self, *args: str) -> None:
        self._as_postgres(
            [
                *(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path)),
                *("-w", "-t", "30", *args),
            ],
            timeout=45,
        )

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server comes back."""
        self._pg_ctl("-m", "fast", "restart")

    def create_database(self) -> None:
        with psycopg.connect(
            f"postgresql://postgres@{self.host.address}:{PG_PORT}/postgres",
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            conn.execute("CREATE DATABASE genvault")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class Deployment:
    """genvault on five hosts; see the module's docstring."""

    def __init__(
        self, network: Network, workdir: Path, *, lease_seconds: int, broker: str = "redis"
    ) -> None:
        self.network = network
        self.broker = broker
        self.workdir = workdir
        self.lease_seconds = lease_seconds
        self.queue = f"genvault-hosts-{uuid.uuid4().hex[:8]}"
        self.services = network.add_host("services")
        self.upstream = network.add_host("upstream")
        self.web_host = network.add_host("web")
        self.worker_hosts = [network.add_host("worker-1"), network.add_host("worker-2")]
        self.processes: list[HostProcess] = []
        self.postgres: Postgres | None = None
        self.redis: HostProcess | None = None
        self.workers: dict[str, HostProcess] = {}
        self.token = ""
        self.disks: list[Tmpfs] = []
        self.fronts: list[S3Front] = []
        self._sql: psycopg.Connection[Any] | None = None

    # --- addresses and environment -------------------------------------------------

    @property
    def demo_url(self) -> str:
        return f"http://{self.upstream.address}:{DEMO_PORT}"

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host.address}:{WEB_PORT}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.services.address}:{MOTO_PORT}"

    @property
    def broker_url(self) -> str:
        if self.broker == "rabbitmq":
            return f"amqp://guest:guest@{self.services.address}:{RABBITMQ_PORT}//"
        return f"redis://{self.services.address}:{REDIS_PORT}/0"

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """What a genvault process in `host` runs with: the hosts' services, its own folders."""
        var = self.workdir / host.name
        var.mkdir(exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTEST", "DATABASE_URL", "CELERY_", "GENVAULT_", "STORAGE_"))
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "PYTHONUNBUFFERED": "1",
                "DATABASE_URL": f"postgres://postgres@{self.services.address}:{PG_PORT}/genvault",
                "CELERY_BROKER_URL": self.broker_url,
                "GENVAULT_TEST_BROKER_URL": self.broker_url,
                "GENVAULT_TEST_QUEUE": self.queue,
                # The broker, never the filesystem fallback the test settings take when it
                # does not answer yet (RabbitMQ takes seconds to start beside gunicorn).
                "GENVAULT_REQUIRE_SERVICES": "1",
                "GENVAULT_TEST_VAR_DIR": str(var),
                "IMAGE_FETCH_TEMP_DIR": str(var / "downloads"),
                "MEDIA_ROOT": str(var / "media"),
                "STORAGE_MODE": "s3",
                "STORAGE_S3_BUCKET": BUCKET,
                "STORAGE_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
                "STORAGE_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                "STORAGE_S3_ENDPOINT": self.s3_endpoint,
                "STORAGE_S3_REGION": "us-east-1",
                "ARK_API_KEY": "",
                "DEMO_UPSTREAM_URL": self.demo_url,
                # The fetch refuses addresses that are not public, but for these.
                "IMAGE_FETCH_ALLOWED_HOSTS": f"{self.upstream.address}:{DEMO_PORT}",
                "STORAGE_LEASE_SECONDS": str(self.lease_seconds),
            }
        )
        env.update(extra)
        return env

    def _process(self, host: Host, argv: list[str], name: str, **extra_env: str) -> HostProcess:
        process = HostProcess(host, argv, self.env(host, **extra_env), self.workdir / f"{name}.log")
        self.processes.append(process)
        process.start()
        return process

    # --- start-up --------------------------------------------------------------------

    def start(self) -> None:
        """Every service up, the database migrated, a staff user's API token in hand.
        What does not depend on PostgreSQL starts while it is being made."""
        moto = self._process(
            self.services,
            [PYTHON, "-m", "moto.server", "-H", self.services.address, "-p", str(MOTO_PORT)],
            "moto",
        )
        if self.broker == "rabbitmq":
            rabbit = self._rabbitmq()
        else:
            self.redis = self._redis(wait=False)
        self.postgres = Postgres(self.services)
        demo = self._process(
            self.upstream,
            [
                *(PYTHON, "manage.py", "demo_upstream"),
                *("--host", self.upstream.address, "--port", str(DEMO_PORT)),
            ],
            "demo",
        )
        web = self._process(
            self.web_host,
            [
                *(str(Path(PYTHON).parent / "gunicorn"), "config.wsgi"),
                *("--bind", f"{self.web_host.address}:{WEB_PORT}", "--workers", "2"),
                *("--worker-class", "gthread", "--threads", "4", "--timeout", "60"),
            ],
            "gunicorn",
        )
        self.postgres.start()
        self.postgres.create_database()
        # One process for what an operator runs once: migrate, a staff user, its token.
        out = self.manage(
            "shell",
            "-c",
            "from django.core.management import call_command as c; import io; "
            "c('migrate', interactive=False, verbosity=0); "
            "c('ensure_admin', stdout=io.StringIO()); c('create_api_token', 'admin')",
            timeout=120,
        )
        self.token = out.strip().splitlines()[-1]
        moto.wait_port(MOTO_PORT)
        self.s3().create_bucket(Bucket=BUCKET)
        if self.broker == "rabbitmq":
            rabbit.wait_port(RABBITMQ_PORT, timeout=60)
        else:
            assert self.redis is not None
            self.redis.wait_port(REDIS_PORT, timeout=10)
        demo.wait_port(DEMO_PORT)
        web.wait_port(WEB_PORT)

    def _redis(self, *, wait: bool = True) -> HostProcess:
        """Redis keeping nothing on disk: restarted, it has forgotten its queues."""
        redis = self._process(
            self.services,
            [
                *(REDIS_SERVER, "--bind", self.services.address, "--port", str(REDIS_PORT)),
                *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
            ],
            "redis",
        )
        if wait:
            redis.wait_port(REDIS_PORT, timeout=10)
        return redis

    def _rabbitmq(self) -> HostProcess:
        """A RabbitMQ node of the test's own, its files in a folder of the test's: the
        machine's listens on its own loopback, which no test host can reach. Its epmd
        and Erlang distribution port live in the services host's network alone."""
        home = self.workdir / "rabbitmq"
        home.mkdir()
        # guest may log in from other hosts: these are the test's own.
        (home / "rabbitmq.conf").write_text(
            f"loopback_users = none\nlisteners.tcp.default = {RABBITMQ_PORT}\n"
        )
        (home / "enabled_plugins").write_text("[].\n")
        return self._process(
            self.services,
            [RABBITMQ_SERVER],
            "rabbitmq",
            HOME=str(home),
            RABBITMQ_NODENAME="rabbit@localhost",
            RABBITMQ_CONFIG_FILE=str(home / "rabbitmq"),
            RABBITMQ_MNESIA_BASE=str(home / "mnesia"),
            RABBITMQ_LOG_BASE=str(home / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(home / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(home / "rabbitmq.pid"),
        )

    def restart_redis(self) -> None:
        assert self.redis is not None
        self.redis.stop()
        wait_until(
            lambda: not port_open(self.services.address, REDIS_PORT),
            timeout=10,
            what="redis to stop",
        )
        self.processes.remove(self.redis)
        self.redis = self._redis()

    def start_workers(self, *indexes: int, **extra_env: str) -> list[HostProcess]:
        """The Celery workers of worker hosts `indexes` (1, 2), as the Procfile's but with
        one slot each, started side by side; returns once all are ready."""
        started = []
        for index in indexes:
            host = self.worker_hosts[index - 1]
            worker = self._process(
                host,
                [
                    *(PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO"),
                    *("--concurrency", "1", "--pool", "prefork"),
                    *("--queues", f"{self.queue},{self.queue}-derivatives"),
                    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
                    *("--hostname", f"{host.name}-{uuid.uuid4().hex[:6]}@%h"),
                ],
                f"{host.name}-{len(self.processes)}",
                **extra_env,
            )
            self.workers[host.name] = worker
            started.append(worker)
        for worker in started:

            def ready(worker: HostProcess = worker) -> bool:
                if not worker.running:
                    raise RuntimeError(f"worker exited: {worker.log()[-2000:]}")
                return "ready." in worker.log()

            wait_until(ready, timeout=40, what=f"the worker on {worker.host.name}", interval=0.2)
        return started

    def s3_front(self) -> S3Front:
        """A proxy in front of the bucket's endpoint; workers given its `url` as
        STORAGE_S3_ENDPOINT store through it."""
        front = S3Front(self.network, self.s3_endpoint)
        self.fronts.append(front)
        return front

    def download_disk(self, index: int, *, size: str) -> Tmpfs:
        """Make worker host `index`'s download folder a disk of `size`; before its
        worker starts (a host sees the mounts made before it started)."""
        folder = self.workdir / self.worker_hosts[index - 1].name / "downloads"
        disk = Tmpfs(folder, size=size)
        self.disks.append(disk)
        return disk

    def manage(self, *args: str, timeout: float = 60, host: Host | None = None) -> str:
        """`manage.py args...` run in the web host (or `host`); its output."""
        host = host or self.web_host
        done = host.run([PYTHON, "manage.py", *args], env=self.env(host), timeout=timeout, cwd=REPO)
        return done.stdout

    def close(self) -> None:
        # The hosts are thrown away: no need for a clean shutdown of what ran on them.
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.kill()
        if self._sql is not None:
            with contextlib.suppress(Exception):
                self._sql.close()
        if self.postgres is not None:
            self.postgres.close()
        for disk in self.disks:
            disk.close()
        for front in self.fronts:
            front.close()

    # --- what the test process looks at ----------------------------------------------

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
            config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}),
        )

    def object_keys(self) -> list[str]:
        listing = self.s3().list_objects_v2(Bucket=BUCKET)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of `query` on the hosts' database, reconnecting after a restart."""
        assert self.postgres is not None
        for attempt in range(2):
            try:
                if self._sql is None or self._sql.closed:
                    self._sql = psycopg.connect(
                        self.postgres.url.replace("postgres://", "postgresql://", 1),
                        autocommit=True,
                        connect_timeout=3,
                    )
                cursor = self._sql.execute(query, params)
                return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    if self._sql is not None:
                        self._sql.close()
                self._sql = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def results(self, result_ids: list[int]) -> dict[int, dict[str, Any]]:
        rows = self.sql(
            "SELECT id, storage_status, storage_attempts, storage_key, thumbnail_key,"
            " storage_error FROM generations_generationresult WHERE id = ANY(%s)",
            (result_ids,),
        )
        keys = ("status", "attempts", "key", "thumbnail", "error")
        return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}

    def wait_status(self, result_ids: list[int], *wanted: str, timeout: float = 30) -> None:
        def reached() -> bool:
            rows = self.results(result_ids)
            return len(rows) == len(result_ids) and all(
                r["status"] in wanted for r in rows.values()
            )

        wait_until(reached, timeout=timeout, what=f"{result_ids} to be {'/'.join(wanted)}")

    def wait_settled(self, result_ids: list[int], *, timeout: float = 60) -> None:
        """Every result stored with its thumbnail, or failed, or expired."""

        def settled() -> bool:
            rows = self.results(result_ids).values()
            return len(rows) == len(result_ids) and all(
                r["status"] in ("failed", "expired") or (r["status"] == "stored" and r["thumbnail"])
                for r in rows
            )

        wait_until(
            settled, timeout=timeout, what=f"{len(result_ids)} results to settle", interval=0.3
        )

    def lease_ran_out(self, result_id: int) -> bool:
        return bool(
            self.sql(
                "SELECT 1 FROM generations_generationresult WHERE id = %s"
                " AND storage_claimed_at <= now() - %s * interval '1 second'",
                (result_id, self.lease_seconds),
            )
        )

    def wait_lease_out(self, result_ids: list[int]) -> None:
        """Until the claims on `result_ids` are older than the lease: others may take them."""
        wait_until(
            lambda: (
                not self.sql(
                    "SELECT 1 FROM generations_generationresult WHERE id = ANY(%s)"
                    " AND storage_status = 'storing'"
                    " AND storage_claimed_at > now() - %s * interval '1 second'",
                    (result_ids, self.lease_seconds),
                )
            ),
            timeout=self.lease_seconds + 10,
            what="the lease to run out",
        )

    def generate(self, prompt: str) -> list[int]:
        """`/api/generate` on gunicorn, as a client would call it: the new results' ids."""
        response = requests.post(
            f"{self.web_url}/api/generate",
            json={
                "prompt": prompt,
                "modelIds": ["doubao-seedream-4-0-250828"],
                "size": "1280x720",
            },
            headers={API_TOKEN_HEADER: f"Bearer {self.token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text[:2000]
        return [result["id"] for result in response.json()["results"]]

    def queued(self) -> int:
        """Tasks waiting on the broker, in this deployment's queues."""
        broker = redis.Redis(host=self.services.address, port=REDIS_PORT, socket_timeout=5)
        try:
            return sum(int(broker.llen(key)) for key in broker.keys(f"{self.queue}*"))  # type: ignore[union-attr]
        finally:
            broker.close()

    def image_fetches(self) -> list[dict[str, Any]]:
        """The demo upstream's GETs of image URLs, from its request log."""
        log = requests.get(f"{self.demo_url}/_demo/requests", timeout=5).json()
        return [e for e in log if e["method"] == "GET" and e["path"].startswith("/images/")]

    def age(self, result_ids: list[int], *, minutes: int = 5) -> None:
        """Let the clock run on: the sweep leaves rows of the last minute to their own task."""
        self.sql(
            "UPDATE generations_generationresult SET created_at = now() - %s * interval '1 minute'"
            " WHERE id = ANY(%s)",
            (minutes, result_ids),
        )

    def sweep(self) -> int:
        """What beat runs every few minutes, run once in the web host: how many it queued."""
        out = self.manage(
            "shell",
            "-c",
            "from generations.tasks import sweep_unstored_images as s; print(s())",
        )
        return int(out.strip().splitlines()[-1])

    def check_invariants(self, *, settled: bool = True) -> dict[str, Any]:
        """No image lost, rows and bucket agreeing both ways, `verify_images` clean: run
        in the web host against the hosts' database and bucket. Without `settled`,
        results may still be on their way (`pending`, `storing`)."""
        done = self.web_host.run(
            [PYTHON, "-m", "tests.hosts.check_invariants", *(() if settled else ("--in-flight",))],
            env=self.env(self.web_host),
            timeout=60,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 0, (
            f"invariants broken:\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
