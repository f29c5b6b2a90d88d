"""The `moto_s3` fixture: a real S3 HTTP endpoint (moto's server mode) on loopback.

The server is started by the tests themselves, once per session, on a free
127.0.0.1 port, so it is never skipped. Each test gets its own bucket, configured
through the same `image_storages_from_env` that reads the production settings.
Loaded by the root conftest through `pytest_plugins`.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import environ
import pytest
from botocore.config import Config

ACCESS_KEY = "genvault-test-key"
SECRET_KEY = "genvault-test-secret"
REGION = "us-east-1"


@dataclass
class MotoS3:
    """One test's bucket on the session's moto server, and a boto3 client to look inside."""

    endpoint_url: str
    bucket: str
    client: Any
    settings: Any

    def storage_env(self, **extra: str) -> dict[str, str]:
        env = {
            "STORAGE_MODE": "local",
            "STORAGE_S3_BUCKET": self.bucket,
            "STORAGE_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "STORAGE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "STORAGE_S3_ENDPOINT": self.endpoint_url,
            "STORAGE_S3_REGION": REGION,
        }
        env.update(extra)
        return env

    def configure(self, *, active: bool = False, **extra_env: str) -> None:
        """Point settings.STORAGES["images_s3"] at the bucket (and make it active if asked)."""
        from storage_backends.conf import image_storages_from_env

        env = environ.Env()
        env.ENVIRON = self.storage_env(STORAGE_MODE="s3" if active else "local", **extra_env)
        mode, entries = image_storages_from_env(env, media_root=str(self.settings.MEDIA_ROOT))
        storages = dict(self.settings.STORAGES)
        storages["images_s3"] = entries["images_s3"]
        storages["images"] = storages[f"images_{mode}"]
        self.settings.STORAGES = storages
        self.settings.STORAGE_MODE = mode

    def use_as_active(self, **extra_env: str) -> None:
        self.configure(active=True, **extra_env)

    def keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port for the whole session; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_s3(moto_server: str, settings: Any) -> MotoS3:
    """A fresh bucket on the moto server, configured as the `s3` backend (not active).

    Call `moto_s3.use_as_active()` to make new objects go to S3 (STORAGE_MODE=s3).
    """
    bucket = f"genvault-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=bucket)
    s3 = MotoS3(endpoint_url=moto_server, bucket=bucket, client=client, settings=settings)
    s3.configure()
    return s3


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (an S3 endpoint that is down)."""
    return _free_port()


# Answered by the relay itself: it sends each response whole, with its own length.
_HOP_HEADERS = ("transfer-encoding", "connection", "content-length")


class FaultyS3Link:
    """An HTTP relay on loopback between us and moto's server that can damage uploads:
    what a broken proxy or a bad NIC does.

    `damage(key)` flips the first byte of every PUT body sent for that key (a
    single-part upload, and each part of a multipart one). Everything else passes
    through unchanged.
    """

    def __init__(self, upstream: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.damaged_key = ""
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request relayed
        self.damaged_puts = 0
        parts = urlsplit(upstream)
        link = self

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                path = self.path.split("?", 1)[0]
                link.requests.append((self.command, path))
                if (
                    self.command == "PUT"
                    and link.damaged_key
                    and path.endswith("/" + link.damaged_key)
                    and body
                ):
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                    link.damaged_puts += 1
                upstream_connection = http.client.HTTPConnection(
                    parts.hostname, parts.port, timeout=30
                )
                try:
                    upstream_connection.request(self.command, self.path, body=body, headers=headers)
                    response = upstream_connection.getresponse()
                    data = response.read()
                    self.send_response(response.status)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_HEADERS:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream_connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def damage(self, key: str) -> None:
        self.damaged_key = key

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def faulty_s3_link(moto_s3: MotoS3) -> Iterator[FaultyS3Link]:
    """`moto_s3`'s bucket, configured as the `s3` backend through a FaultyS3Link."""
    link = FaultyS3Link(moto_s3.endpoint_url)
    moto_s3.configure(STORAGE_S3_ENDPOINT=link.url)
    try:
        yield link
    finally:
        link.close()
