"""The safe fetch against a loopback server of our own, and the SSRF refusals."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3.util.connection

from generations import fetch
from generations.fetch import (
    AddressRefused,
    FetchError,
    ImageExpired,
    ImageTooLarge,
    TooManyRedirects,
    TransientFetchError,
    fetch_to_file,
)
from tests.generations.sample_images import HTML, JPEG, PNG, SVG, WEBP


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
    ("path", "body"), [("/img.jpg", JPEG), ("/img.png", PNG), ("/img.webp", WEBP)]
)
def test_fetches_an_image_to_a_file_with_its_hash(local, path, body, downloads):
    fetched = local(path)

    assert fetched.path.parent == downloads
    assert fetched.path.read_bytes() == body
    assert fetched.byte_size == len(body)
    assert fetched.sha256 == hashlib.sha256(body).hexdigest()


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


# --- what came back is imaging's question --------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body"), [("/mislabeled", PNG), ("/page.html", HTML), ("/pic.svg", SVG)]
)
def test_a_body_is_fetched_as_sent_whatever_its_declared_type(local, route, body):
    assert local(route).path.read_bytes() == body
