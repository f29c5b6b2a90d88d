"""Fetching an image URL on a user's behalf, safely.

A result's external URL comes from upstream, and through image-to-image and redirects a user
can steer it, so fetching it is an SSRF surface: every hop is parsed, resolved once, checked
against private and other non-global addresses, and connected to by the address that was
checked. Bodies are streamed to a temporary file, hashed on the way, under a byte limit and
a total deadline. What the bytes are is `generations.imaging`'s question.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from tempfile import NamedTemporaryFile
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.ssl_match_hostname import CertificateError

MAX_REDIRECTS = 3
CHUNK_SIZE = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
EXPIRED_STATUSES = frozenset({403, 404, 410})
USER_AGENT = "genvault"

# Host names as DNS spells them; anything else (percent signs, backslashes, IDN) is refused
# rather than interpreted, so that the name we check is the name the connection uses.
_HOSTNAME_RE = re.compile(r"[a-z0-9_.-]+")
# Printable ASCII without spaces: a URL with anything else would be rewritten by some parser.
_URL_RE = re.compile(r"[\x21-\x7e]+")
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


class FetchError(Exception):
    """A fetch failed; `code` is recorded, `transient` decides retrying."""

    code: str = "fetch_failed"
    transient: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class TransientFetchError(FetchError):
    """Timeouts, broken connections, 429 and 5xx: worth another try later."""

    code = "fetch_unavailable"
    transient = True


class ImageExpired(FetchError):
    """The image host answered 403/404/410: a signed URL past its expiry, or gone."""

    code = "image_expired"


class AddressRefused(FetchError):
    """The URL's scheme, shape or resolved address is not one we may fetch."""

    code = "address_refused"


class ImageTooLarge(FetchError):
    """The body is, or announced it would be, over the byte limit."""

    code = "image_too_large"


class TooManyRedirects(FetchError):
    code = "too_many_redirects"


@dataclass
class FetchedFile:
    path: Path
    byte_size: int
    sha256: str


@dataclass(frozen=True)
class _Target:
    """One URL taken apart exactly as written, so nothing is re-encoded on the way out."""

    url: str
    scheme: str
    hostname: str  # lower-case, IPv6 without brackets
    host_header: str  # host[:port] as written, lower-case: also the allow-list key
    port: int
    request_target: str  # path?query as written


def fetch_to_file(
    url: str,
    *,
    dest_dir: Path | None = None,
    max_bytes: int,
    allowed_hosts: Collection[str],
    connect_timeout: float,
    total_timeout: float,
) -> FetchedFile:
    """Download `url` into a new file in `dest_dir`; the caller deletes `.path`.

    Raises a FetchError subclass for every failure, and leaves no file behind when it does.
    """
    allowed = {host.lower() for host in allowed_hosts}
    deadline = time.monotonic() + total_timeout
    current_url = url
    for hop in range(MAX_REDIRECTS + 1):
        target = _parse_url(current_url, allowed)
        address = _resolve_checked_address(target, allowed)
        connection = _connect(target, address, connect_timeout=connect_timeout, deadline=deadline)
        # Kept apart from the connection: http.client drops connection.sock once a response
        # says "Connection: close", while the response goes on reading from it.
        sock = connection.sock
        watchdog = _Watchdog(sock, deadline)
        try:
            response = _send_request(connection, target, deadline)
            try:
                if response.status in REDIRECT_STATUSES:
                    if hop == MAX_REDIRECTS:
                        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")
                    current_url = _redirect_location(response, target)
                    continue
                _check_status(response.status)
                return _stream_to_file(
                    response,
                    sock,
                    dest_dir=dest_dir,
                    max_bytes=max_bytes,
                    deadline=deadline,
                )
            finally:
                response.release_conn()
                response.close()
        except HTTPError as exc:
            raise _translate_urllib3_error(exc, deadline) from exc
        except OSError as exc:
            raise _translate_os_error(exc, deadline) from exc
        except http.client.HTTPException as exc:
            raise _translate_http_client_error(exc, deadline) from exc
        finally:
            watchdog.cancel()
            connection.close()
            if sock is not None:
                sock.close()
    raise AssertionError("unreachable: the last hop either returns or raises")


def _parse_url(url: str, allowed: Collection[str]) -> _Target:
    if not _URL_RE.fullmatch(url):
        raise AddressRefused("the URL is empty or holds spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"malformed URL: {exc}") from exc
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    if scheme not in ("http", "https"):
        raise AddressRefused(f"scheme {scheme or '(none)'!r} is not fetched")
    if not netloc or not parts.hostname:
        raise AddressRefused("the URL has no host")
    if "@" in netloc:
        raise AddressRefused("credentials in the URL are refused")
    host_header = netloc.lower()
    if host_header.endswith(":"):
        raise AddressRefused("the URL has an empty port")
    if scheme == "http" and host_header not in allowed:
        raise AddressRefused("plain http is fetched only from allowed hosts")

    hostname = parts.hostname
    if netloc.startswith("["):
        if "%" in hostname:
            raise AddressRefused("IPv6 zone ids are refused")
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError as exc:
            raise AddressRefused(f"malformed IPv6 host {hostname!r}") from exc
    elif not _HOSTNAME_RE.fullmatch(hostname):
        raise AddressRefused(f"host {hostname!r} is not a plain DNS name or address")

    # The request target is cut out of the URL as written: a signed URL stays byte-exact.
    after_scheme = url.index("//") + 2
    if url[after_scheme : after_scheme + len(netloc)] != netloc:
        raise AddressRefused("malformed URL")
    request_target = url[after_scheme + len(netloc) :].split("#", 1)[0]
    if not request_target.startswith("/"):
        request_target = "/" + request_target
    return _Target(
        url=url,
        scheme=scheme,
        hostname=hostname,
        host_header=host_header,
        port=port if port is not None else (443 if scheme == "https" else 80),
        request_target=request_target,
    )


def _resolve_checked_address(target: _Target, allowed: Collection[str]) -> str:
    """Resolve once; refuse if any address is not global; return the one to connect to."""
    try:
        infos = socket.getaddrinfo(
            target.hostname, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise TransientFetchError(
                f"could not resolve {target.hostname!r}: {exc}", code="dns_unavailable"
            ) from exc
        raise FetchError(
            f"could not resolve {target.hostname!r}: {exc}", code="host_not_found"
        ) from exc
    addresses = [str(info[4][0]).split("%", 1)[0] for info in infos if info[0] in _FAMILIES]
    if not addresses:
        raise FetchError(f"{target.hostname!r} has no address", code="host_not_found")
    if target.host_header not in allowed:
        for address in addresses:
            if not is_public_address(address):
                raise AddressRefused(
                    f"{target.host_header!r} resolves to {address}, which is not a public address"
                )
    return addresses[0]


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable, looking inside IPv6 that wraps IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip.teredo is not None:
            candidates.extend(ip.teredo)
        if ip in _NAT64_PREFIX:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if int(ip) >> 32 == 0:  # deprecated IPv4-compatible form, ::a.b.c.d
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return all(
        candidate.is_global
        and not candidate.is_multicast
        and not candidate.is_private
        and not candidate.is_loopback
        and not candidate.is_link_local
        and not candidate.is_reserved
        and not candidate.is_unspecified
        for candidate in candidates
    )


def _ca_bundle() -> str:
    return certifi.where()


def _connect(
    target: _Target, address: str, *, connect_timeout: float, deadline: float
) -> HTTPConnection:
    """Open a connection to the checked address; TLS still verifies the URL's host name."""
    timeout = max(0.001, min(connect_timeout, deadline - time.monotonic()))
    connection: HTTPConnection
    if target.scheme == "https":
        connection = HTTPSConnection(
            address,
            target.port,
            timeout=timeout,
            server_hostname=target.hostname,
            assert_hostname=target.hostname,
            cert_reqs="CERT_REQUIRED",
            ca_certs=_ca_bundle(),
        )
    else:
        connection = HTTPConnection(address, target.port, timeout=timeout)
    try:
        connection.connect()
    except CertificateError as exc:
        connection.close()
        raise FetchError(f"TLS verification failed: {exc}", code="tls_error") from exc
    except HTTPError as exc:
        connection.close()
        raise _translate_urllib3_error(exc, deadline) from exc
    except OSError as exc:
        connection.close()
        raise _translate_os_error(exc, deadline) from exc
    return connection


def _send_request(
    connection: HTTPConnection, target: _Target, deadline: float
) -> urllib3.BaseHTTPResponse:
    # The connection's own request(), not a pool's urlopen(): urlopen would normalise the
    # percent-escapes of a signed query. No Authorization header ever goes to an image host.
    connection.timeout = max(0.001, deadline - time.monotonic())
    connection.request(
        "GET",
        target.request_target,
        headers={"Host": target.host_header, "User-Agent": USER_AGENT, "Accept": "image/*"},
        preload_content=False,
        decode_content=False,
    )
    return connection.getresponse()


def _redirect_location(response: urllib3.BaseHTTPResponse, target: _Target) -> str:
    location = response.headers.get("Location", "").strip()
    if not location:
        raise FetchError(f"redirect {response.status} without a Location", code="bad_redirect")
    if urlsplit(location).scheme:
        return location  # absolute: used exactly as written
    return urljoin(target.url, location)


def _check_status(status: int) -> None:
    if status == 200:
        return
    if status in EXPIRED_STATUSES:
        raise ImageExpired(f"the image host answered {status}")
    if status == 429 or 500 <= status <= 599:
        raise TransientFetchError(f"the image host answered {status}", code=f"http_{status}")
    raise FetchError(f"the image host answered {status}", code=f"http_{status}")


def _stream_to_file(
    response: urllib3.BaseHTTPResponse,
    sock: socket.socket | None,
    *,
    dest_dir: Path | None,
    max_bytes: int,
    deadline: float,
) -> FetchedFile:
    declared_length = _content_length(response)
    if declared_length is not None and declared_length > max_bytes:
        raise ImageTooLarge(f"Content-Length {declared_length} is over {max_bytes} bytes")
    digest = hashlib.sha256()
    byte_size = 0
    try:
        temporary = NamedTemporaryFile(  # noqa: SIM115 - kept on purpose: the caller owns it
            dir=dest_dir, prefix="fetch-", suffix=".part", delete=False
        )
    except OSError as exc:
        raise TransientFetchError(
            f"cannot create the download file: {exc}", code="disk_error"
        ) from exc
    with temporary:
        path = Path(temporary.name)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransientFetchError("the download took too long", code="fetch_timeout")
                if sock is not None:
                    # Once the body is complete the socket may already be closed: harmless.
                    with contextlib.suppress(OSError):
                        sock.settimeout(remaining)
                # read1: at most one socket read, so a slow drip cannot outlive the deadline.
                chunk = response.read1(CHUNK_SIZE)
                if not chunk:
                    break
                byte_size += len(chunk)
                if byte_size > max_bytes:
                    raise ImageTooLarge(f"the body is over {max_bytes} bytes")
                digest.update(chunk)
                try:
                    temporary.write(chunk)
                except OSError as exc:  # a full disk, not a network failure
                    raise TransientFetchError(
                        f"cannot write the download file: {exc}", code="disk_error"
                    ) from exc
            if declared_length is not None and byte_size != declared_length:
                raise TransientFetchError(
                    f"the body ended after {byte_size} of {declared_length} bytes",
                    code="fetch_truncated",
                )
            try:
                # The last bytes may still wait in the file's buffer: a disk that fills
                # up with them says so only when they are written out.
                temporary.flush()
            except OSError as exc:
                raise TransientFetchError(
                    f"cannot write the download file: {exc}", code="disk_error"
                ) from exc
        except BaseException:
            # Closing writes out the buffer again: on a full disk that fails once more,
            # and must not stand in for the first error or keep the file.
            with contextlib.suppress(OSError):
                temporary.close()
            path.unlink(missing_ok=True)
            raise
    return FetchedFile(path=path, byte_size=byte_size, sha256=digest.hexdigest())


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    if response.headers.get("Transfer-Encoding"):
        return None
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        length = int(value.split(",")[0].strip())
    except ValueError as exc:
        raise FetchError(f"bad Content-Length {value!r}", code="bad_response") from exc
    if length < 0:
        raise FetchError(f"bad Content-Length {value!r}", code="bad_response")
    return length


class _Watchdog:
    """Cuts the socket at the deadline, whatever blocking read (headers, body) is under way."""

    def __init__(self, sock: socket.socket | None, deadline: float) -> None:
        self._sock = sock
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        if self._sock is None:
            return
        # The plain socket's shutdown: an SSL socket's own would unwrap it under the reader.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _past(deadline: float) -> bool:
    return time.monotonic() >= deadline


def _translate_urllib3_error(exc: HTTPError, deadline: float) -> FetchError:
    if _past(deadline) or isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return TransientFetchError(f"the download took too long: {exc}", code="fetch_timeout")
    if isinstance(exc, SSLError):
        cause = exc.__cause__ or (exc.args[0] if exc.args else None)
        if isinstance(cause, Exception) and "CERTIFICATE_VERIFY_FAILED" in str(cause):
            return FetchError(f"TLS verification failed: {exc}", code="tls_error")
        return TransientFetchError(f"TLS failed: {exc}", code="connection_failed")
    if isinstance(exc, ProtocolError | NewConnectionError):
        return TransientFetchError(f"connection failed: {exc}", code="connection_failed")
    return FetchError(f"bad response: {exc}", code="bad_response")


def _translate_http_client_error(exc: http.client.HTTPException, deadline: float) -> FetchError:
    if _past(deadline):
        return TransientFetchError(f"the download took too long: {exc!r}", code="fetch_timeout")
    if isinstance(exc, http.client.IncompleteRead):
        return TransientFetchError(f"the body was cut short: {exc!r}", code="fetch_truncated")
    return FetchError(f"the image host did not answer in HTTP: {exc!r}", code="bad_response")


def _translate_os_error(exc: OSError, deadline: float) -> FetchError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FetchError(f"TLS verification failed: {exc}", code="tls_error")
    if _past(deadline) or isinstance(exc, TimeoutError):
        return TransientFetchError(f"the download took too long: {exc}", code="fetch_timeout")
    return TransientFetchError(f"connection failed: {exc}", code="connection_failed")
