"""Fetching an image URL on a user's behalf, and checking that what came back is an image.

A result's external URL comes from upstream, and through image-to-image and redirects a user
can steer it, so fetching it is an SSRF surface: every hop is parsed, resolved once, checked
against private and other non-global addresses, and connected to by the address that was
checked. Bodies are streamed to a temporary file under a byte limit and a total deadline, and
images are inspected without ever decoding a full-resolution picture we could not afford.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import math
import re
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from PIL import Image, ImageFile, PngImagePlugin
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

# Pillow's default; a stray True elsewhere would let a truncated JPEG pass as whole.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow keeps a PNG's text chunks in memory, decompressed, while it decodes the pixels:
# by default up to 64 MB of them, which a PNG of a few hundred KB can hold. Text is not
# what an image is kept for; more than this is refused as not an image.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024

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

# What one image may cost a worker to decode stays under about 100 MB: the pixel limit
# (settings) bounds a PNG, whose full decode is 4 bytes a pixel, and two formats that cost
# more get budgets of their own.
# A progressive JPEG's decoder keeps every DCT coefficient of the full picture in memory
# (about 3 bytes a pixel) whatever the draft scale: 4096x4096, the largest size Seedream
# renders, costs about 50 MB.
PROGRESSIVE_JPEG_MAX_PIXELS = 4096 * 4096
# Pillow decodes a WebP only whole, through libwebp's animation decoder: its two canvases,
# the frame copied out of them and the image made from that copy hold 16 bytes a pixel
# at once (a 4096x4096 WebP would cost 256 MB), beside a copy of the whole file. Seedream
# never sends WebP; 2048x2048 costs 64 MB, and a lossless one of noise is 16 MB.
WEBP_MAX_PIXELS = 2048 * 2048
WEBP_MAX_BYTES = 20 * 1024 * 1024
# Pillow reads a PNG's other chunks whole, and twice over while it joins the pieces; pixel
# data (IDAT, and fdAT for animation frames) it streams. A PNG may not hide megabytes in
# its metadata.
PNG_MAX_METADATA_CHUNK = 8 * 1024 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PIXEL_CHUNKS = (b"IDAT", b"fdAT")
# A Seedream 2K image (2048 px) decodes at 1/4 scale to exactly this: no resize step,
# and sharp on a high-density screen in the gallery's cards.
THUMBNAIL_MAX_SIDE = 512
# A decoded image is converted and reduced towards the thumbnail in tiles of about this
# many pixels a side, so that its decode stays the only full-size buffer (see _reduced).
_TILE_SIDE = 1024
# As Image.thumbnail's: the reduce by a whole factor leaves at least twice the thumbnail's
# size for the final LANCZOS step, which keeps the thumbnail as sharp as a fair resize.
_REDUCING_GAP = 2.0

_PILLOW_FORMATS = {
    "JPEG": ("image/jpeg", "jpg"),
    "MPO": ("image/jpeg", "jpg"),  # a JPEG with extra frames; Pillow names it apart
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
}
# What Image.open may try: MPO files come through the JPEG opener.
_OPENED_FORMATS = ["JPEG", "PNG", "WEBP"]
# Decoding errors Pillow raises for files that are not what their header promises.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
_JPEG_FORMATS = ("JPEG", "MPO")


class FetchError(Exception):
    """A fetch or image check failed; `code` is recorded, `transient` decides retrying."""

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


class NotAnImage(FetchError):
    """The bytes are not a whole JPEG, PNG or WebP."""

    code = "not_an_image"


class ImageTooManyPixels(NotAnImage):
    """More pixels than we decode: refused from the header, before any decoding."""

    code = "image_too_many_pixels"


@dataclass
class FetchedFile:
    path: Path
    byte_size: int
    sha256: str
    declared_content_type: str
    final_url: str


@dataclass
class ImageInfo:
    content_type: str
    extension: str
    width: int
    height: int


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
                    final_url=target.url,
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
    final_url: str,
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
        except BaseException:
            temporary.close()
            path.unlink(missing_ok=True)
            raise
    return FetchedFile(
        path=path,
        byte_size=byte_size,
        sha256=digest.hexdigest(),
        declared_content_type=response.headers.get("Content-Type", ""),
        final_url=final_url,
    )


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


@contextlib.contextmanager
def _pillow_errors() -> Iterator[None]:
    """Pillow's ways of saying "not an image we take" as our FetchErrors."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooManyPixels(str(exc)) from exc
    except FetchError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise NotAnImage("not a JPEG, PNG or WebP image") from exc
    except _DECODE_ERRORS as exc:
        raise NotAnImage(f"the image does not decode: {exc}") from exc


def _check_container(path: Path) -> None:
    """Checks on the raw bytes, before Pillow reads anything it would hold in memory.

    A PNG's every chunk and CRC (what Pillow's `verify()` checks, without reading a
    chunk whole), and a WebP's size, which Pillow reads whole into memory.
    """
    with path.open("rb") as fh:
        head = fh.read(12)
        if head.startswith(_PNG_SIGNATURE):
            fh.seek(len(_PNG_SIGNATURE))
            _check_png_chunks(fh)
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            size = path.stat().st_size
            if size > WEBP_MAX_BYTES:
                raise ImageTooLarge(
                    f"a WebP of {size} bytes is over the limit of {WEBP_MAX_BYTES} bytes"
                )


def _check_png_chunks(fh: BinaryIO) -> None:
    while True:
        header = fh.read(8)
        if len(header) < 8:
            raise NotAnImage("the PNG ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", header)
        name = kind.decode("latin-1")
        if kind not in _PNG_PIXEL_CHUNKS and length > PNG_MAX_METADATA_CHUNK:
            raise ImageTooLarge(
                f"the PNG's {name!r} chunk of {length} bytes is over the limit of "
                f"{PNG_MAX_METADATA_CHUNK} bytes"
            )
        crc = zlib.crc32(kind)
        remaining = length
        while remaining:
            piece = fh.read(min(remaining, CHUNK_SIZE))
            if not piece:
                raise NotAnImage(f"the PNG ends inside its {name!r} chunk")
            crc = zlib.crc32(piece, crc)
            remaining -= len(piece)
        stored = fh.read(4)
        if len(stored) < 4 or struct.unpack(">I", stored)[0] != crc:
            raise NotAnImage(f"the PNG's {name!r} chunk fails its CRC")
        if kind == b"IEND":
            return


def _checked_header(image: Image.Image, *, max_pixels: int | None) -> ImageInfo:
    """What the header says, refused before decoding when it claims too much."""
    content_type, extension = _PILLOW_FORMATS[str(image.format)]
    width, height = image.size
    if width <= 0 or height <= 0:
        raise NotAnImage(f"the image claims {width}x{height} pixels")
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooManyPixels(f"{width}x{height} is over the limit of {max_pixels} pixels")
    if (
        image.format in _JPEG_FORMATS
        and image.info.get("progressive")
        and pixels > PROGRESSIVE_JPEG_MAX_PIXELS
    ):
        raise ImageTooManyPixels(
            f"a progressive JPEG of {width}x{height} is over the limit of "
            f"{PROGRESSIVE_JPEG_MAX_PIXELS} pixels"
        )
    if image.format == "WEBP" and pixels > WEBP_MAX_PIXELS:
        raise ImageTooManyPixels(
            f"a WebP of {width}x{height} is over the limit of {WEBP_MAX_PIXELS} pixels"
        )
    return ImageInfo(content_type=content_type, extension=extension, width=width, height=height)


def inspect_image(path: Path, *, max_pixels: int) -> ImageInfo:
    """Sniff and fully verify a fetched file; its type comes from its bytes, not a header."""
    with _pillow_errors():
        _check_container(path)
        with Image.open(path, formats=_OPENED_FORMATS) as image:
            info = _checked_header(image, max_pixels=max_pixels)
            if image.format != "PNG":  # a PNG's chunks and CRCs are checked, never decoded
                if image.format in _JPEG_FORMATS:
                    # A reduced-scale decode still reads every scan, so truncation shows.
                    image.draft("RGB", (max(1, info.width // 8), max(1, info.height // 8)))
                image.load()
    return info


def render_thumbnail(
    path: Path, *, max_side: int = THUMBNAIL_MAX_SIDE, max_pixels: int | None = None
) -> bytes:
    """A small WebP of the image, upright, decoding a JPEG at the smallest scale that will do.

    The checks that bound what decoding costs always apply; `max_pixels` too when given.
    """
    with _pillow_errors():
        _check_container(path)
        return _thumbnail_of_checked(path, max_side=max_side, max_pixels=max_pixels)


def _thumbnail_of_checked(path: Path, *, max_side: int, max_pixels: int | None) -> bytes:
    with Image.open(path, formats=_OPENED_FORMATS) as image:
        _checked_header(image, max_pixels=max_pixels)
        if image.format in _JPEG_FORMATS:
            image.draft("RGB", _thumbnail_size(image.size, max_side))
        return _encode_thumbnail(image, max_side=max_side)


def inspect_and_thumbnail(
    path: Path, *, max_pixels: int, max_side: int = THUMBNAIL_MAX_SIDE
) -> tuple[ImageInfo, bytes]:
    """`inspect_image` and `render_thumbnail` with one decode.

    A JPEG decoded at the thumbnail's reduced scale still reads every scan, and a WebP
    or a PNG decodes only whole, so the decode that makes the thumbnail also proves
    the file whole (a PNG's CRCs are checked before, on the raw bytes).
    """
    with _pillow_errors():
        _check_container(path)
        with Image.open(path, formats=_OPENED_FORMATS) as image:
            info = _checked_header(image, max_pixels=max_pixels)
            if image.format in _JPEG_FORMATS:
                image.draft("RGB", _thumbnail_size(image.size, max_side))
            image.load()
            return info, _encode_thumbnail(image, max_side=max_side)


# EXIF orientation -> the transpose that makes the image upright (as ImageOps does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _thumbnail_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _reduced(image: Image.Image, *, mode: str, max_side: int) -> Image.Image:
    """`image` in `mode`, reduced by whole factors towards the thumbnail, a tile at a time.

    `convert()` and `reduce()` each copy their whole input (`reduce()` of RGBA through a
    premultiplied copy): on a decoded 4096x4096 PNG, another 64 MB apiece. Done on tiles
    whose sides are multiples of the factors, the result is the same and the decode
    stays the only full-size buffer, whatever the image's shape.
    """
    width, height = image.size
    target_width, target_height = _thumbnail_size(image.size, max_side)
    factor_x = max(1, int(width / target_width / _REDUCING_GAP))
    factor_y = max(1, int(height / target_height / _REDUCING_GAP))
    tile_width = factor_x * max(1, _TILE_SIDE // factor_x)
    tile_height = factor_y * max(1, _TILE_SIDE // factor_y)
    image.load()
    reduced = Image.new(mode, (-(-width // factor_x), -(-height // factor_y)))
    for top in range(0, height, tile_height):
        for left in range(0, width, tile_width):
            tile = image.crop(
                (left, top, min(width, left + tile_width), min(height, top + tile_height))
            )
            if tile.mode != mode:
                tile = tile.convert(mode)
            if factor_x > 1 or factor_y > 1:
                tile = tile.reduce((factor_x, factor_y))
            reduced.paste(tile, (left // factor_x, top // factor_y))
    return reduced


def _encode_thumbnail(image: Image.Image, *, max_side: int) -> bytes:
    """Shrink, then turn upright (cheap on the small image), then encode as WebP."""
    orientation = image.getexif().get(0x0112, 1)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    thumbnail = _reduced(image, mode="RGBA" if has_alpha else "RGB", max_side=max_side)
    if max(thumbnail.size) > max_side:
        thumbnail.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if orientation in _UPRIGHT:
        thumbnail = thumbnail.transpose(_UPRIGHT[orientation])
    output = BytesIO()
    # method 0, the encoder's fastest: 2-3x less CPU than its default 4 for a few KB
    # more on a 512 px thumbnail (measured by bench/, see the README's Performance).
    thumbnail.save(output, format="WEBP", quality=80, method=0)
    return output.getvalue()
