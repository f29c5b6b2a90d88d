"""The safe fetch against a loopback server of our own, the SSRF refusals, and image checks."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3.util.connection
from PIL import Image

from generations import fetch
from generations.fetch import (
    AddressRefused,
    FetchError,
    ImageExpired,
    ImageTooLarge,
    ImageTooManyPixels,
    NotAnImage,
    TooManyRedirects,
    TransientFetchError,
    fetch_to_file,
    inspect_image,
    render_thumbnail,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _image_bytes(fmt: str, size: tuple[int, int], mode: str = "RGB", **save: object) -> bytes:
    # Noise, so that the encoded file has real entropy data for a truncation to cut.
    noise = Image.effect_noise(size, 64).convert(mode)
    out = io.BytesIO()
    noise.save(out, format=fmt, **save)
    return out.getvalue()


def _translucent_png(size: tuple[int, int]) -> bytes:
    image = Image.effect_noise(size, 64).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize(size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


JPEG = _image_bytes("JPEG", (640, 360), quality=90)
PNG = _translucent_png((300, 200))
WEBP = _image_bytes("WEBP", (320, 240), quality=80)
GIF = _image_bytes("GIF", (32, 32), mode="P")
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'


@dataclass
class LoggedRequest:
    path: str
    host: str
    headers: dict[str, str]


@dataclass
class ServerState:
    port: int = 0
    requests: list[LoggedRequest] = field(default_factory=list)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    finished: dict[str, threading.Event] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def done(self, name: str) -> threading.Event:
        return self.finished.setdefault(name, threading.Event())


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request a connection, and a body without Content-Length ends at close.
    server_version = "test-image-host"
    state: ServerState

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.state.requests.append(
            LoggedRequest(self.path, self.headers.get("Host", ""), dict(self.headers.items()))
        )
        route = self.path.split("?", 1)[0]
        # The client hanging up mid-body is expected in several tests.
        with contextlib.suppress(OSError):
            self._route(route)

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, route: str) -> None:
        port = self.state.port
        simple = {
            "/img.jpg": (JPEG, "image/jpeg"),
            "/img.png": (PNG, "image/png"),
            "/img.webp": (WEBP, "image/webp"),
            "/page.html": (HTML, "text/html"),
            "/pic.svg": (SVG, "image/svg+xml"),
            "/mislabeled": (PNG, "image/jpeg"),
            "/signed": (PNG, "image/png"),
        }
        if route in simple:
            body, content_type = simple[route]
            self._send(200, body, content_type)
        elif route.startswith("/status/"):
            self._send(int(route.rsplit("/", 1)[1]), b"no", "text/plain")
        elif route.startswith("/redirect/"):
            hops_left = int(route.rsplit("/", 1)[1])
            if hops_left == 0:
                self._send(200, PNG, "image/png")
                return
            # Alternate relative and absolute Locations: both must be followed and checked.
            location = (
                f"/redirect/{hops_left - 1}"
                if hops_left % 2
                else f"http://127.0.0.1:{port}/redirect/{hops_left - 1}"
            )
            self._send(302, b"", "text/plain", Location=location)
        elif route == "/to-localhost":
            location = f"http://localhost:{port}/never-fetched?via=redirect"
            self._send(302, b"", "text/plain", Location=location)
        elif route == "/to-metadata":
            self._send(302, b"", "text/plain", Location="https://169.254.169.254/latest/")
        elif route == "/truncated":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG[: len(JPEG) // 2])
        elif route in ("/huge-declared", "/huge-undeclared"):
            self._send_huge(route, declared=route == "/huge-declared")
        elif route == "/not-http":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        elif route == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self._drip(b"x")
        elif route == "/slow-headers":
            self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Drip: ")
            self._drip(b"a")
        else:
            self._send(404, b"unknown", "text/plain")

    def _send_huge(self, name: str, *, declared: bool) -> None:
        total = 64 * 1024 * 1024
        chunk = b"\x00" * 65536
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            if declared:
                self.send_header("Content-Length", str(total))
            self.end_headers()
            while sent < total:
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            self.state.bytes_sent[name] = sent
            self.state.done(name).set()

    def _drip(self, byte: bytes) -> None:
        # Bounded, so that a fetch ignoring its deadline fails the test instead of hanging it.
        give_up = time.monotonic() + 3
        while not self.state.stopping.is_set() and time.monotonic() < give_up:
            self.wfile.write(byte)
            self.wfile.flush()
            time.sleep(0.02)


@pytest.fixture
def image_server() -> Iterator[ServerState]:
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield state
    state.stopping.set()
    server.shutdown()
    server.server_close()


def _fetch(url: str, dest: Path, allowed: set[str], **overrides: float) -> fetch.FetchedFile:
    options: dict = {
        "dest_dir": dest,
        "max_bytes": 5 * 1024 * 1024,
        "allowed_hosts": allowed,
        "connect_timeout": 2.0,
        "total_timeout": 5.0,
    }
    options.update(overrides)
    return fetch_to_file(url, **options)


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """The folder fetches write into, so a test can see that a failure left nothing there."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def local(image_server: ServerState, downloads: Path) -> Callable[..., fetch.FetchedFile]:
    """Fetch a path of the test server, allowed through its exact host:port."""
    allowed = {f"127.0.0.1:{image_server.port}"}

    def run(path: str, **overrides: float) -> fetch.FetchedFile:
        return _fetch(
            f"http://127.0.0.1:{image_server.port}{path}", downloads, allowed, **overrides
        )

    return run


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Any attempt to open a connection fails the test: refusals must come first."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError(f"a connection was attempted: {args!r}")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def _fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> list[str]:
    """Resolve `names` to the given addresses; other hosts (IP literals) resolve for real."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host in names:
            lookups.append(host)
            return [
                (
                    socket.AF_INET6 if ":" in addr else socket.AF_INET,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    (addr, port),
                )
                for addr in names[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


# --- fetching what the user asked for ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "declared"),
    [
        ("/img.jpg", JPEG, "image/jpeg"),
        ("/img.png", PNG, "image/png"),
        ("/img.webp", WEBP, "image/webp"),
    ],
)
def test_fetches_an_image_to_a_file_with_its_hash(local, path, body, declared, downloads):
    fetched = local(path)

    assert fetched.path.parent == downloads
    assert fetched.path.read_bytes() == body
    assert fetched.byte_size == len(body)
    assert fetched.sha256 == hashlib.sha256(body).hexdigest()
    assert fetched.declared_content_type == declared


def test_sends_the_signed_url_byte_for_byte_and_no_credentials(local, image_server):
    signed = "/signed?X-Tos-Credential=AKLT%2f20250101%2Fcn&X-Tos-Signature=ab%3d&empty="

    local(signed)

    [request] = image_server.requests
    assert request.path == signed  # lower-case escapes kept: nothing re-encoded
    assert request.host == f"127.0.0.1:{image_server.port}"
    assert request.headers["User-Agent"] == "genvault"
    assert request.headers["Accept"] == "image/*"
    assert "Authorization" not in request.headers


def test_connects_to_the_address_it_checked_without_a_second_lookup(
    image_server, tmp_path, monkeypatch
):
    host = f"images.example.test:{image_server.port}"
    lookups = _fake_dns(monkeypatch, {"images.example.test": ["127.0.0.1"]})

    fetched = _fetch(f"http://{host}/img.png", tmp_path, {host})

    assert fetched.path.read_bytes() == PNG
    assert lookups == ["images.example.test"]
    assert image_server.requests[0].host == host


# --- status codes and redirects -----------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_or_forbidden_is_an_expired_image(local, status, downloads):
    with pytest.raises(ImageExpired) as caught:
        local(f"/status/{status}")

    assert caught.value.transient is False
    assert caught.value.code == "image_expired"
    assert list(downloads.iterdir()) == []


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_busy_or_broken_host_is_worth_retrying(local, status):
    with pytest.raises(TransientFetchError) as caught:
        local(f"/status/{status}")

    assert caught.value.transient is True


def test_other_statuses_are_permanent_failures(local):
    with pytest.raises(FetchError) as caught:
        local("/status/400")

    assert caught.value.transient is False
    assert not isinstance(caught.value, ImageExpired)


def test_follows_three_redirects(local, image_server):
    fetched = local("/redirect/3")

    assert fetched.path.read_bytes() == PNG
    assert fetched.final_url == f"http://127.0.0.1:{image_server.port}/redirect/0"
    assert image_server.paths() == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]


def test_refuses_a_fourth_redirect(local, image_server, downloads):
    with pytest.raises(TooManyRedirects):
        local("/redirect/4")

    assert "/redirect/0" not in image_server.paths()
    assert list(downloads.iterdir()) == []


def test_redirect_to_another_spelling_of_an_allowed_host_is_refused(local, image_server):
    with pytest.raises(AddressRefused):
        local("/to-localhost")

    assert image_server.paths() == ["/to-localhost"]
    assert not any(r.host.startswith("localhost") for r in image_server.requests)


def test_redirect_to_cloud_metadata_is_refused_before_connecting(local, monkeypatch):
    connected: list[tuple] = []
    real_create = urllib3.util.connection.create_connection

    def loopback_only(address, *args, **kwargs):
        connected.append(address)
        assert address[0] == "127.0.0.1", f"tried to connect to {address}"
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", loopback_only)

    with pytest.raises(AddressRefused):
        local("/to-metadata")

    assert [address[0] for address in connected] == ["127.0.0.1"]


# --- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/huge-declared", "/huge-undeclared"])
def test_oversized_body_is_refused_early_and_leaves_no_file(local, image_server, route, downloads):
    with pytest.raises(ImageTooLarge) as caught:
        local(route, max_bytes=100_000)

    assert caught.value.transient is False
    assert list(downloads.iterdir()) == []
    assert image_server.done(route).wait(5)
    # The server could not push its 64 MiB: we hung up long before.
    assert image_server.bytes_sent[route] < 32 * 1024 * 1024


def test_truncated_body_is_a_transient_failure(local, downloads):
    with pytest.raises(TransientFetchError):
        local("/truncated")

    assert list(downloads.iterdir()) == []


@pytest.mark.parametrize("route", ["/slow-body", "/slow-headers"])
def test_slow_drip_stops_at_the_total_deadline(local, route, downloads):
    started = time.monotonic()

    with pytest.raises(TransientFetchError) as caught:
        local(route, total_timeout=0.5)

    assert time.monotonic() - started < 2.0
    assert caught.value.code == "fetch_timeout"
    assert list(downloads.iterdir()) == []


def test_a_host_not_speaking_http_is_a_permanent_failure(local, downloads):
    with pytest.raises(FetchError) as caught:
        local("/not-http")

    assert caught.value.transient is False
    assert caught.value.code == "bad_response"
    assert list(downloads.iterdir()) == []


def test_connection_refused_is_transient(tmp_path):
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(TransientFetchError):
            _fetch(f"http://127.0.0.1:{port}/img.png", tmp_path, {f"127.0.0.1:{port}"})


# --- SSRF: refused before any connection ---------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080@example.com/",
        "https://127.0.0.1/",
        "https://127.0.0.2/",
        "https://[::1]/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0x7f.1/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:7f00:1]/",
        "https://[::127.0.0.1]/",
        "https://[2002:7f00:1::]/",
        "https://[64:ff9b::7f00:1]/",
        "https://localhost/",
        "https://10.0.0.1/",
        "https://172.16.5.4/",
        "https://192.168.1.1/",
        "https://100.64.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/",
        "https://[fc00::1]/",
        "https://0.0.0.0/",
        "https://[::]/",
        "https://224.0.0.1/",
        "https://[ff02::1]/",
        "https://255.255.255.255/",
        "https://240.0.0.1/",
        "ftp://127.0.0.1:8080/img.png",
        "file:///etc/passwd",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://127.0.0.1:8080/_",
        "https:///img.png",
        "//example.com/img.png",
        "https://user:secret@example.com/img.png",
        "https://example.com\\@127.0.0.1/",
        "https://exa mple.com/",
        "https://[fe80::1%25eth0]/",
        "",
    ],
)
def test_ssrf_targets_are_refused_before_connecting(url, no_connections, tmp_path):
    with pytest.raises(AddressRefused) as caught:
        _fetch(url, tmp_path, {"127.0.0.1:8080"})

    assert caught.value.transient is False
    assert caught.value.code == "address_refused"
    assert no_connections == []


@pytest.mark.parametrize(
    "spelling",
    ["localhost", "LOCALHOST", "2130706433", "127.0.0.2", "[::1]", "[::ffff:127.0.0.1]", "127.1"],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_allowed_host_is_matched_literally(
    image_server, spelling, scheme, no_connections, tmp_path
):
    url = f"{scheme}://{spelling}:{image_server.port}/img.png"

    with pytest.raises(AddressRefused):
        _fetch(url, tmp_path, {f"127.0.0.1:{image_server.port}"})

    assert image_server.requests == []


def test_allowed_host_without_its_port_does_not_allow_other_ports(no_connections, tmp_path):
    with pytest.raises(AddressRefused):
        _fetch("http://127.0.0.1:8081/img.png", tmp_path, {"127.0.0.1:8080"})


@pytest.mark.parametrize(
    "addresses",
    [["10.1.2.3"], ["93.184.216.34", "192.168.0.10"], ["::1"], ["2606:4700::1", "fd00::7"]],
)
def test_public_name_resolving_to_a_private_address_is_refused(
    addresses, monkeypatch, no_connections, tmp_path
):
    _fake_dns(monkeypatch, {"images.example.com": addresses})

    with pytest.raises(AddressRefused):
        _fetch("https://images.example.com/a.png?sig=1", tmp_path, set())


# --- HTTPS: connecting by address still verifies the name -----------------------------------------


@pytest.fixture
def tls_server(image_server, tmp_path_factory, monkeypatch) -> Iterator[ServerState]:
    """The same routes over TLS, with a certificate for images.example.test from a test CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "genvault test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "images.example.test")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("images.example.test")]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain_file = folder / "leaf.pem"
    chain_file.write_bytes(
        leaf_cert.public_bytes(serialization.Encoding.PEM)
        + leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file)

    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    monkeypatch.setattr(fetch, "_ca_bundle", lambda: str(ca_file))
    yield state
    state.stopping.set()
    server.shutdown()
    server.server_close()


def test_https_fetch_verifies_the_certificate_for_the_urls_name(tls_server, monkeypatch, tmp_path):
    port = tls_server.port
    _fake_dns(monkeypatch, {"images.example.test": ["127.0.0.1"]})

    fetched = _fetch(
        f"https://images.example.test:{port}/img.webp?X-Tos-Signature=a%2fb",
        tmp_path,
        {f"images.example.test:{port}"},
    )

    assert fetched.path.read_bytes() == WEBP
    assert tls_server.requests[0].path == "/img.webp?X-Tos-Signature=a%2fb"
    assert tls_server.requests[0].host == f"images.example.test:{port}"


def test_https_certificate_for_another_name_is_refused(tls_server, monkeypatch, tmp_path):
    port = tls_server.port
    _fake_dns(monkeypatch, {"other.example.test": ["127.0.0.1"]})

    with pytest.raises(FetchError) as caught:
        _fetch(
            f"https://other.example.test:{port}/img.webp", tmp_path, {f"other.example.test:{port}"}
        )

    assert caught.value.code == "tls_error"
    assert caught.value.transient is False
    assert tls_server.requests == []


# --- inspecting what came back --------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "content_type", "extension", "size"),
    [
        (JPEG, "image/jpeg", "jpg", (640, 360)),
        (PNG, "image/png", "png", (300, 200)),
        (WEBP, "image/webp", "webp", (320, 240)),
    ],
)
def test_inspect_image_reports_sniffed_type_and_size(tmp_path, data, content_type, extension, size):
    info = inspect_image(_write(tmp_path, "x.bin", data), max_pixels=10_000_000)

    assert (info.content_type, info.extension, (info.width, info.height)) == (
        content_type,
        extension,
        size,
    )


def test_a_png_declared_as_jpeg_is_stored_as_png(local):
    fetched = local("/mislabeled")

    info = inspect_image(fetched.path, max_pixels=10_000_000)

    assert fetched.declared_content_type == "image/jpeg"
    assert info.content_type == "image/png"
    assert info.extension == "png"


@pytest.mark.parametrize("route", ["/page.html", "/pic.svg"])
def test_fetched_html_and_svg_are_not_images(local, route):
    fetched = local(route)

    with pytest.raises(NotAnImage) as caught:
        inspect_image(fetched.path, max_pixels=10_000_000)

    assert caught.value.code == "not_an_image"
    assert caught.value.transient is False


def _corrupt_png_crc(data: bytes) -> bytes:
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    crc_at = idat + 4 + length
    return data[:crc_at] + bytes([data[crc_at] ^ 0xFF]) + data[crc_at + 1 :]


@pytest.mark.parametrize(
    "data",
    [
        GIF,
        HTML,
        SVG,
        b"just some text\n",
        b"",
        JPEG[: len(JPEG) // 2],
        PNG[: len(PNG) // 2],
        _corrupt_png_crc(PNG),
        WEBP[: len(WEBP) // 2],
    ],
    ids=["gif", "html", "svg", "text", "empty", "cut-jpeg", "cut-png", "bad-crc-png", "cut-webp"],
)
def test_inspect_image_refuses_what_is_not_a_whole_jpeg_png_or_webp(tmp_path, data):
    with pytest.raises(NotAnImage):
        inspect_image(_write(tmp_path, "x.bin", data), max_pixels=10_000_000)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims another size: a decompression bomb's shape."""
    data = bytearray(_image_bytes("PNG", (1, 1)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [(30000, 30000, 100_000_000), (5000, 5000, 1_000_000), (300, 200, 59_999)],
)
def test_too_many_pixels_is_refused_from_the_header(tmp_path, width, height, max_pixels):
    data = PNG if (width, height) == (300, 200) else _png_claiming(width, height)
    path = _write(tmp_path, "bomb.png", data)

    with pytest.raises(ImageTooManyPixels) as caught:
        inspect_image(path, max_pixels=max_pixels)

    assert caught.value.code == "image_too_many_pixels"
    assert isinstance(caught.value, NotAnImage)


def test_progressive_jpeg_has_a_smaller_pixel_budget(tmp_path, monkeypatch):
    progressive = _image_bytes("JPEG", (640, 360), quality=90, progressive=True)
    monkeypatch.setattr(fetch, "PROGRESSIVE_JPEG_MAX_PIXELS", 640 * 360 - 1)

    with pytest.raises(ImageTooManyPixels):
        inspect_image(_write(tmp_path, "p.jpg", progressive), max_pixels=10_000_000)
    baseline = inspect_image(_write(tmp_path, "b.jpg", JPEG), max_pixels=10_000_000)

    assert baseline.width == 640


def _peak_memory_growth_mib(script: str) -> float:
    """Run `script` in a fresh interpreter; how far its peak RSS grew past the imports."""
    program = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "Image.init()\n"
        "from generations.fetch import inspect_image, render_thumbnail\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{script}\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps((after - before) / 1024))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_decompression_bomb_is_refused_without_using_memory(tmp_path):
    path = _write(tmp_path, "bomb.png", _png_claiming(30000, 30000))

    growth = _peak_memory_growth_mib(
        "from generations.fetch import ImageTooManyPixels\n"
        "try:\n"
        f"    inspect_image(Path({str(path)!r}), max_pixels=100_000_000)\n"
        "except ImageTooManyPixels:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('the bomb was accepted')"
    )

    assert growth < 16  # decoding it would take 2.7 GB


def test_large_jpeg_is_inspected_and_thumbnailed_at_reduced_scale(tmp_path):
    path = tmp_path / "large.jpg"
    Image.linear_gradient("L").resize((6000, 4000)).convert("RGB").save(path, quality=90)

    growth = _peak_memory_growth_mib(
        f"path = Path({str(path)!r})\n"
        "info = inspect_image(path, max_pixels=100_000_000)\n"
        "assert (info.width, info.height) == (6000, 4000), info\n"
        "thumb = render_thumbnail(path)\n"
        "assert len(thumb) > 0"
    )

    assert growth < 30  # a full-scale decode alone is 69 MiB


# --- thumbnails -------------------------------------------------------------------------------


def _open_thumbnail(data: bytes) -> Image.Image:
    thumbnail = Image.open(io.BytesIO(data))
    assert thumbnail.format == "WEBP"
    return thumbnail


@pytest.mark.parametrize(
    ("data", "expected_size", "mode"),
    [(JPEG, (512, 288), "RGB"), (PNG, (300, 200), "RGBA"), (WEBP, (320, 240), "RGB")],
)
def test_thumbnail_is_a_small_webp_keeping_the_aspect(tmp_path, data, expected_size, mode):
    thumbnail = _open_thumbnail(render_thumbnail(_write(tmp_path, "x.bin", data)))

    assert thumbnail.size == expected_size
    assert thumbnail.mode == mode


def test_thumbnail_respects_max_side(tmp_path):
    thumbnail = _open_thumbnail(render_thumbnail(_write(tmp_path, "x.jpg", JPEG), max_side=64))

    assert max(thumbnail.size) == 64
    assert thumbnail.size == (64, 36)


def test_thumbnail_is_turned_upright_by_exif_orientation(tmp_path):
    landscape = Image.new("RGB", (640, 320), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was held on its side: display rotated 90 degrees
    out = io.BytesIO()
    landscape.save(out, format="JPEG", exif=exif)

    thumbnail = _open_thumbnail(render_thumbnail(_write(tmp_path, "side.jpg", out.getvalue())))

    assert thumbnail.size == (256, 512)


def test_thumbnail_of_a_non_image_is_refused(tmp_path):
    with pytest.raises(NotAnImage):
        render_thumbnail(_write(tmp_path, "page.html", HTML))


def test_inspect_and_thumbnail_decodes_a_jpeg_once_and_still_catches_truncation(
    tmp_path: Path,
) -> None:
    from generations.fetch import inspect_and_thumbnail

    image = Image.new("RGB", (1600, 900), (30, 120, 200))
    whole = tmp_path / "whole.jpg"
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright it is 900 wide, 1600 high
    image.save(buffer, "JPEG", quality=90, exif=exif)
    whole.write_bytes(buffer.getvalue())
    info, thumbnail = inspect_and_thumbnail(whole, max_pixels=10_000_000, max_side=480)
    assert (info.content_type, info.width, info.height) == ("image/jpeg", 1600, 900)
    with Image.open(io.BytesIO(thumbnail)) as thumb:
        assert thumb.format == "WEBP"
        assert thumb.size == (270, 480)

    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(NotAnImage):
        inspect_and_thumbnail(cut, max_pixels=10_000_000)
