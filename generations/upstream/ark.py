"""The client for Volcengine Ark's image generation API (Seedream, SeedEdit).

One call asks one model for one or more images. Whatever goes wrong upstream or on
the network comes back as an ``UpstreamError`` item, never as an exception, so that
a generation asking several models at once records each model's outcome.

An upstream is trusted with nothing it could use against us: each call ends by a
wall-clock deadline however slowly the answer trickles in, the answer is read in
pieces under a byte limit, no more images are kept than were asked for, and every
image URL passes the same check as any other URL we link (https, or plain http from
an allowed host) before it is kept.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import http.client
import json
import logging
import random
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

from generations.checks import UnsafeUrl, checked_external_url

if TYPE_CHECKING:
    from generations.models import ImageModel

logger = logging.getLogger(__name__)

DEMO_API_KEY = "demo"
# Codes of our own, for trouble that never produced an Ark error body.
TIMEOUT = "UpstreamTimeout"
CONNECTION_ERROR = "UpstreamConnectionError"
HTTP_ERROR = "UpstreamHTTPError"
BAD_RESPONSE = "UpstreamBadResponse"
UNSAFE_IMAGE_URL = "UnsafeImageUrl"

# Whether asking again can help is decided on Ark's error code, not on the HTTP status:
# Ark answers 429 for a rate limit, which resets within the minute, and also for a spent
# quota or a spending cap, which waiting does not clear.
RATE_LIMIT_CODES = frozenset(
    {
        "ModelAccountRpmRateLimitExceeded",
        "ModelAccountTpmRateLimitExceeded",
        "ModelAccountIpmRateLimitExceeded",
        "APIAccountRpmRateLimitExceeded",
        "AccountRateLimitExceeded",
        "RequestBurstTooFast",
        "InflightBatchsizeExceeded",
        "ServerOverloaded",
    }
)
RATE_LIMIT_PREFIX = "RateLimitExceeded."  # .EndpointRPMExceeded, .EndpointTPMExceeded
# Never asked again: the answer would be the same, and some of them cost money to find out.
FINAL_CODES = frozenset(
    {
        "QuotaExceeded",
        "SetLimitExceeded",
        "AccountOverdueError",
        "AuthenticationError",
        "AccessDenied",
        "InvalidAccountStatus",
        "ModelNotOpen",
        "ContentSecurityDetectionError",
    }
)
FINAL_PREFIXES = (
    "MissingParameter",
    "InvalidParameter",
    "InvalidImageURL",
    "InvalidEndpoint",  # InvalidEndpoint.ClosedEndpoint, InvalidEndpointOrModel.NotFound...
    "OperationDenied",
)
# The longest computed pause between two tries; Ark's limits count per minute.
MAX_BACKOFF_SECONDS = 30.0
# Error messages end up in the database and the gallery: keep them readable.
MAX_MESSAGE_LENGTH = 1000
TOS_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MiB = 1024 * 1024
# Ark's ceiling for one sequential generation, and ours: never more results per call.
MAX_IMAGES_PER_CALL = 15
# The most of one answer we read. A url answer is about 1 KB per image (a signed TOS
# link and its size), so 15 images fit in 2 MiB a hundred times over, and parsing
# 2 MiB of hostile JSON costs tens of MB at most. A b64_json answer carries the images
# themselves: 15 Seedream 2K JPEGs of 1-3 MiB each, a third more in base64.
MAX_ANSWER_BYTES = 2 * MiB
MAX_B64_ANSWER_BYTES = 64 * MiB
READ_CHUNK_BYTES = 64 * 1024
_CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class UpstreamImage:
    url: str
    size: str
    expires_at: datetime | None


@dataclass(frozen=True)
class UpstreamInlineImage:
    """An image that came in the answer itself (``b64_json``): no URL, nothing to expire."""

    data: bytes = field(repr=False)
    size: str


@dataclass(frozen=True)
class UpstreamError:
    code: str
    message: str


UpstreamItem = UpstreamImage | UpstreamInlineImage | UpstreamError


@dataclass(frozen=True)
class UpstreamUsage:
    """What Ark counted for a call (and bills): the images it made, and their tokens."""

    generated_images: int | None
    output_tokens: int | None


@dataclass(frozen=True)
class UpstreamAnswer:
    items: list[UpstreamItem]
    usage: UpstreamUsage | None = None


OnItem = Callable[[UpstreamItem], None]


def external_url_expiry(url: str) -> datetime | None:
    """When a signed TOS URL stops working: ``X-Tos-Date`` + ``X-Tos-Expires`` (aware UTC).

    None when the URL does not say (not signed, or signed some other way).
    """
    try:
        query = {key.lower(): value for key, value in parse_qsl(urlsplit(url).query)}
    except ValueError:
        return None
    signed_at = query.get("x-tos-date")
    lifetime = query.get("x-tos-expires")
    if not signed_at or not lifetime:
        return None
    try:
        start = datetime.strptime(signed_at, TOS_DATE_FORMAT).replace(tzinfo=UTC)
        seconds = int(lifetime)
        return start + timedelta(seconds=seconds)
    except (ValueError, OverflowError):
        return None


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    if len(text) > MAX_MESSAGE_LENGTH:
        return text[: MAX_MESSAGE_LENGTH - 1] + "…"
    return text


def _as_bool(value: Any) -> bool:
    """Form and JSON inputs both: "false", "0", "off" and "no" mean False."""
    if isinstance(value, str):
        return value.strip().lower() not in {"", "false", "0", "off", "no"}
    return bool(value)


def _error_from_body(body: Any) -> UpstreamError | None:
    """Ark's error shape ``{"error": {"code", "message", "param", "type"}}``, if that is it."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    code = str(error.get("code") or error.get("type") or HTTP_ERROR)
    message = str(error.get("message") or code)
    if error.get("param"):
        message = f"{message} (param: {error['param']})"
    return UpstreamError(code=_short(code), message=_short(message))


def is_retryable(*, status: int, code: str) -> bool:
    """Whether an error answer may go away if the same request is sent again later.

    Rate limits and an overloaded service do, and so may Ark's 5xx; quotas, spending
    caps, account and key trouble, refused content, bad parameters and unknown models
    do not. A 429 with a code we do not know is taken for a rate limit: Ark bills no
    refused request, so the retry costs only time.
    """
    if code in FINAL_CODES or code.startswith(FINAL_PREFIXES) or "SensitiveContent" in code:
        return False
    if code.endswith("RiskDetection"):
        return False
    if code in RATE_LIMIT_CODES or code.startswith(RATE_LIMIT_PREFIX):
        return True
    return status == 429 or status >= 500


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """What a ``Retry-After`` header asks for, in seconds: a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,6}(\.[0-9]+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def answer_limit(body: dict[str, Any]) -> int:
    """How many bytes the answer to ``body`` may take: url answers are small."""
    return MAX_B64_ANSWER_BYTES if body.get("response_format") == "b64_json" else MAX_ANSWER_BYTES


def images_asked(body: dict[str, Any]) -> int:
    """How many images ``body`` asks for: 1, or ``max_images`` of a sequential generation."""
    if body.get("sequential_image_generation") != "auto":
        return 1
    options = body.get("sequential_image_generation_options") or {}
    return max(1, min(MAX_IMAGES_PER_CALL, int(options.get("max_images", 1))))


# -- the deadline ------------------------------------------------------------------------

_current = threading.local()


class CallDeadline:
    """Ends one call at a wall-clock deadline, wherever it is blocked.

    `requests`' read timeout restarts with every byte, so an upstream sending one byte
    a second would hold a call for ever. While a CallDeadline is entered, every
    connection the calling thread sends a request on is watched, and at the deadline
    its socket is shut down: sending the body, waiting for the headers and reading the
    answer all end there and then with an error, which ``passed`` tells apart.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._connection: HTTPConnection | None = None
        self._expired = False
        self._timer = self._new_timer(seconds)

    def _new_timer(self, seconds: float) -> threading.Timer:
        # The timer fires for itself only: one renewed meanwhile has no say any more.
        timer = threading.Timer(max(0.0, seconds), lambda: self._expire(timer))
        timer.daemon = True
        return timer

    def __enter__(self) -> CallDeadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        with self._lock:
            self._connection = None
        _current.deadline = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def renew(self, seconds: float) -> None:
        """Move the deadline to ``seconds`` from now (a stream's next event has that long)."""
        with self._lock:
            if self._expired:
                return
            self._timer.cancel()
            self.seconds = seconds
            self.deadline = time.monotonic() + seconds
            self._timer = self._new_timer(seconds)
            self._timer.start()

    @property
    def passed(self) -> bool:
        return self._expired or time.monotonic() >= self.deadline

    def watch(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connection = connection
            if self._expired:
                _cut(connection)

    def _expire(self, timer: threading.Timer) -> None:
        with self._lock:
            if timer is not self._timer:
                return
            self._expired = True
            if self._connection is not None:
                _cut(self._connection)


def _cut(connection: HTTPConnection) -> None:
    sock = getattr(connection, "sock", None)
    sock = getattr(sock, "socket", sock)  # a TLS-in-TLS transport wraps the real socket
    if isinstance(sock, socket.socket):
        # The plain socket's shutdown: an SSL socket's own would unwrap it under the reader.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(connection: HTTPConnection) -> None:
    deadline: CallDeadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # a kept-alive connection is connected already
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[urllib3.HTTPConnectionPool]] = {
    "http": _WatchedHTTPPool,
    "https": _WatchedHTTPSPool,
}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, with connections a CallDeadline can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are their own classes
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


# -- reading an answer -----------------------------------------------------------------------


class AnswerTooLarge(ValueError):
    """The answer is longer than we read."""


class UnreadableAnswer(ValueError):
    """The answer's bytes cannot be decoded (an encoding not asked for, or broken)."""


def read_answer(response: requests.Response, *, deadline: CallDeadline, max_bytes: int) -> bytes:
    """The body of a streamed ``response``, read in pieces by ``deadline`` and under ``max_bytes``.

    Never holds more than ``max_bytes`` (decompressed) plus one piece: a declared length
    over it is refused before reading, and reading stops as soon as the body passes it.
    Raises AnswerTooLarge, UnreadableAnswer, TimeoutError once the deadline passed, or
    what the connection raised (an OSError, urllib3's and http.client's errors).
    """
    return b"".join(answer_pieces(response, deadline=deadline, max_bytes=max_bytes))


def answer_pieces(
    response: requests.Response, *, deadline: CallDeadline, max_bytes: int
) -> Iterator[bytes]:
    """The body of ``response`` piece by piece as it arrives, decoded; see read_answer."""
    declared = response.headers.get("Content-Length", "").strip()
    if _CONTENT_LENGTH_RE.fullmatch(declared) and int(declared) > max_bytes:
        raise AnswerTooLarge(f"it declares {int(declared)} bytes")
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        inflater = None
    elif encoding in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib, told by its header
    else:
        raise UnreadableAnswer(f"it is encoded as {encoding[:40]!r}, which was not asked for")
    received = 0
    while True:
        if deadline.passed:
            raise TimeoutError("the deadline passed")
        # read1: at most one socket read, so that the deadline is looked at between them.
        piece = response.raw.read1(READ_CHUNK_BYTES, decode_content=False)
        if not piece:
            return
        if inflater is not None:
            # Never more than what is left of the limit, however well the piece compresses.
            try:
                piece = inflater.decompress(piece, max_bytes - received + 1)
            except zlib.error as exc:
                raise UnreadableAnswer(f"its {encoding} encoding is broken: {exc}") from None
        received += len(piece)
        if received > max_bytes:
            raise AnswerTooLarge("it goes on past that")
        yield piece


def _megabytes(limit: int) -> str:
    return f"{limit / MiB:g} MiB"


class ArkClient:
    """Calls ``POST {base_url}/images/generations``; safe to share between threads."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        connect_timeout: float,
        read_timeout: float,
        max_retries: int,
        retry_backoff: float = 2.0,
        retry_budget: float = 120.0,
        total_timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # One try, however slowly its answer trickles in: by default one connect and one read.
        self.total_timeout = (
            connect_timeout + read_timeout if total_timeout is None else total_timeout
        )
        self.max_retries = max(0, max_retries)
        # Seconds before the first retry, doubled for each next one (up to 30 s).
        self.retry_backoff = retry_backoff
        # No retry starts later than this many seconds after the first try did.
        self.retry_budget = retry_budget
        # Injectable, so that waiting can be watched without being waited for.
        self._sleep = sleep
        self._clock = clock
        # requests.Session is not thread-safe: each thread keeps its own pooled one.
        self._local = threading.local()

    def __repr__(self) -> str:  # never show the key
        return f"ArkClient(base_url={self.base_url!r})"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/images/generations"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = _WatchedAdapter()
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
        return session

    def request_body(
        self,
        *,
        model_id: str,
        prompt: str,
        size: str | None,
        params: dict[str, Any],
        image: str | list[str] | None,
        capabilities: set[str],
        stream: bool = False,
    ) -> dict[str, Any]:
        """The JSON Ark receives: only the options this model takes."""
        body: dict[str, Any] = {
            "model": model_id,
            "prompt": prompt,
            "response_format": (
                "b64_json" if params.get("response_format") == "b64_json" else "url"
            ),
            "watermark": _as_bool(params.get("watermark", True)),
        }
        if size:
            body["size"] = size
        if image and "image_to_image" in capabilities:
            body["image"] = image
        if "seed" in capabilities and params.get("seed") is not None:
            body["seed"] = int(params["seed"])
        if "guidance_scale" in capabilities and params.get("guidance_scale") is not None:
            body["guidance_scale"] = float(params["guidance_scale"])
        options = params.get("optimize_prompt_options")
        if "optimize_prompt_options" in capabilities and isinstance(options, dict):
            body["optimize_prompt_options"] = {"mode": str(options["mode"])}
        if "output_format" in capabilities and params.get("output_format"):
            body["output_format"] = str(params["output_format"])
        max_images = params.get("max_images")
        if "sequential" in capabilities and max_images is not None and int(max_images) > 1:
            if int(max_images) > MAX_IMAGES_PER_CALL:
                raise ValueError(f"max_images is at most {MAX_IMAGES_PER_CALL}")
            body["sequential_image_generation"] = "auto"
            body["sequential_image_generation_options"] = {"max_images": int(max_images)}
        if stream:
            body["stream"] = True
        return body

    def generate(
        self,
        *,
        model_id: str,
        prompt: str,
        size: str | None,
        params: dict[str, Any],
        image: str | list[str] | None,
        capabilities: set[str],
    ) -> list[UpstreamItem]:
        """One item per image asked for; never raises for upstream or network trouble."""
        return self.generate_answer(
            model_id=model_id,
            prompt=prompt,
            size=size,
            params=params,
            image=image,
            capabilities=capabilities,
        ).items

    def generate_answer(
        self,
        *,
        model_id: str,
        prompt: str,
        size: str | None,
        params: dict[str, Any],
        image: str | list[str] | None,
        capabilities: set[str],
        stream: bool = False,
        on_item: OnItem | None = None,
    ) -> UpstreamAnswer:
        """The items and Ark's usage; never raises for upstream or network trouble.

        With ``stream``, Ark sends each image as an event the moment it is made, and the
        read timeout runs between events rather than over the whole call, so a group
        that takes minutes is never cut off. ``on_item`` is handed every item as soon as
        it is known (each event as it arrives; all at once for an answer that is not
        streamed), in order, on the calling thread.
        """
        try:
            body = self.request_body(
                model_id=model_id,
                prompt=prompt,
                size=size,
                params=params,
                image=image,
                capabilities=capabilities,
                stream=stream,
            )
        except (TypeError, ValueError) as exc:
            error = UpstreamError(code="InvalidParameter", message=_short(f"bad params: {exc}"))
            outcome = _Outcome([error])
        else:
            outcome = self._post_with_retries(body, on_item=on_item)
        if on_item is not None:
            for item in outcome.items[outcome.delivered :]:
                on_item(item)
        return UpstreamAnswer(items=outcome.items, usage=outcome.usage)

    def _post_with_retries(self, body: dict[str, Any], *, on_item: OnItem | None) -> _Outcome:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if body.get("stream") else "application/json",
            # Decoded here under the answer's byte limit (see read_answer).
            "Accept-Encoding": "gzip, deflate",
        }
        started = self._clock()
        attempt = 0
        while True:
            with CallDeadline(self.total_timeout) as deadline:
                outcome = self._post_once(body, headers, deadline, on_item=on_item)
            if not outcome.retry or attempt >= self.max_retries:
                return outcome
            delay = self._retry_delay(attempt, outcome.retry_after)
            spent = self._clock() - started
            if spent + delay > self.retry_budget:
                return self._out_of_budget(outcome, delay=delay)
            attempt += 1
            logger.info(
                "Ark call failed (%s), retry %d of %d in %.1fs",
                _first_code(outcome.items),
                attempt,
                self.max_retries,
                delay,
            )
            self._sleep(delay)

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Ark's ``Retry-After`` when it sent one, else a doubling pause, spread out a little."""
        if retry_after is not None:
            return retry_after
        pause = min(MAX_BACKOFF_SECONDS, self.retry_backoff * (2**attempt))
        return pause * random.uniform(0.8, 1.2)

    def _out_of_budget(self, outcome: _Outcome, *, delay: float) -> _Outcome:
        if outcome.retry_after is None:
            return outcome
        # Say why it was not tried again when Ark asked for a wait we could not give.
        items: list[UpstreamItem] = [
            UpstreamError(
                item.code,
                _short(
                    f"{item.message} (Ark asked to try again in {delay:g} s, "
                    f"past the {self.retry_budget:g} s we wait for retries)"
                ),
            )
            if isinstance(item, UpstreamError)
            else item
            for item in outcome.items
        ]
        return _Outcome(items)

    def _timed_out(self) -> UpstreamError:
        # The request reached Ark and may be generating (and billed): never retried.
        return UpstreamError(
            TIMEOUT,
            f"the call to Ark timed out: no complete answer within {self.total_timeout:g} s "
            "after the request was sent. Ark may still be generating it, and may bill it: "
            "it was not sent again",
        )

    def _read_timed_out(self, exc: Exception) -> UpstreamError:
        return UpstreamError(
            TIMEOUT,
            _short(
                f"Ark did not answer in time after the request was sent ({exc}). It may still "
                "be generating it, and may bill it: it was not sent again"
            ),
        )

    def _post_once(
        self,
        body: dict[str, Any],
        headers: dict[str, str],
        deadline: CallDeadline,
        *,
        on_item: OnItem | None = None,
    ) -> _Outcome:
        """The outcome of one HTTP call, and whether trying again may help."""
        remaining = max(0.001, deadline.remaining())
        try:
            response = self._session().post(
                self.endpoint,
                json=body,
                headers=headers,
                timeout=(min(self.connect_timeout, remaining), min(self.read_timeout, remaining)),
                # A redirect would carry the key somewhere else: Ark never redirects.
                allow_redirects=False,
                # Read below, in pieces, by the deadline and under the size limit.
                stream=True,
            )
        except requests.exceptions.ConnectTimeout as exc:
            # Never connected, so nothing was sent: safe to try again.
            message = _short(f"connecting to Ark timed out: {exc}")
            return _Outcome([UpstreamError(TIMEOUT, message)], retry=True)
        except requests.exceptions.Timeout as exc:
            return _Outcome([self._read_timed_out(exc)])
        except requests.exceptions.RequestException as exc:
            if deadline.passed:
                return _Outcome([self._timed_out()])
            if _failed_before_sending(exc):
                message = _short(f"cannot reach Ark: {exc}")
                return _Outcome([UpstreamError(CONNECTION_ERROR, message)], retry=True)
            message = _short(
                f"the call to Ark failed after the request may have been sent ({exc}). "
                "Ark may bill it: it was not sent again"
            )
            return _Outcome([UpstreamError(CONNECTION_ERROR, message)])

        status = response.status_code
        limit = answer_limit(body)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if status < 300 and content_type == "text/event-stream":
            try:
                return self._read_stream(
                    response, deadline=deadline, body=body, limit=limit, on_item=on_item
                )
            finally:
                response.close()
        try:
            raw = read_answer(response, deadline=deadline, max_bytes=limit)
        except AnswerTooLarge as exc:
            message = f"Ark's answer is larger than the {_megabytes(limit)} we read: {exc}"
            return _Outcome([UpstreamError(BAD_RESPONSE, message)])
        except UnreadableAnswer as exc:
            message = _short(f"Ark's answer is unreadable: {exc}")
            return _Outcome([UpstreamError(BAD_RESPONSE, message)])
        except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            if deadline.passed:
                return _Outcome([self._timed_out()])
            if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                return _Outcome([self._read_timed_out(exc)])
            # Sent and partly answered: it may be billed, so not sent again.
            message = _short(f"Ark's answer was cut short (HTTP {status}): {exc}")
            return _Outcome([UpstreamError(CONNECTION_ERROR, message)])
        finally:
            response.close()

        try:
            payload: Any = json.loads(raw)
        except (ValueError, RecursionError):
            payload = None
        if status >= 300:
            text = raw[:300].decode("utf-8", errors="replace")
            error = _error_from_body(payload) or UpstreamError(
                HTTP_ERROR, _short(f"Ark answered HTTP {status}: {text}")
            )
            retry = is_retryable(status=status, code=error.code)
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            return _Outcome([error], retry=retry, retry_after=retry_after if retry else None)
        return _Outcome(
            self._items_from_payload(payload, asked=images_asked(body)),
            usage=_usage(payload.get("usage") if isinstance(payload, dict) else None),
        )

    def _read_stream(
        self,
        response: requests.Response,
        *,
        deadline: CallDeadline,
        body: dict[str, Any],
        limit: int,
        on_item: OnItem | None,
    ) -> _Outcome:
        """Read Ark's events, handing each image on as it arrives; never retried.

        The deadline is renewed after every event: the read timeout runs between events.
        Whatever ends the stream early, the images that arrived are kept, and one error
        item says what happened to the rest.
        """
        stream = _EventStream(asked=images_asked(body), on_item=on_item)
        # The first event may take a whole image's time, as a plain answer does.
        try:
            for event in sse_events(answer_pieces(response, deadline=deadline, max_bytes=limit)):
                deadline.renew(self.read_timeout)
                if not stream.take(event):
                    break
        except AnswerTooLarge as exc:
            message = f"Ark's stream is longer than the {_megabytes(limit)} we read: {exc}"
            stream.end(UpstreamError(BAD_RESPONSE, message))
        except UnreadableAnswer as exc:
            stream.end(UpstreamError(BAD_RESPONSE, _short(f"Ark's stream is unreadable: {exc}")))
        except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            stream.end(self._stream_cut(stream, deadline=deadline, exc=exc))
        else:
            if not stream.finished:
                stream.end(self._stream_cut(stream, deadline=deadline, exc=None))
        return _Outcome(stream.items, usage=stream.usage, delivered=len(stream.items))

    def _stream_cut(
        self, stream: _EventStream, *, deadline: CallDeadline, exc: Exception | None
    ) -> UpstreamError:
        """Why a stream ended before Ark said it was complete."""
        rest = "Later images of the group may still be made, and billed, without reaching us"
        if deadline.passed or isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError):
            return UpstreamError(
                TIMEOUT,
                f"Ark sent no event for {self.read_timeout:g} s: the stream was given up "
                f"after {stream.images} image(s). {rest}",
            )
        if exc is not None:
            return UpstreamError(
                CONNECTION_ERROR,
                _short(f"Ark's stream broke off after {stream.images} image(s) ({exc}). {rest}"),
            )
        return UpstreamError(
            BAD_RESPONSE,
            f"Ark's stream ended after {stream.images} image(s) without saying it was "
            f"complete. {rest}",
        )

    @staticmethod
    def _items_from_payload(payload: Any, *, asked: int) -> list[UpstreamItem]:
        error = _error_from_body(payload)
        if error is not None:
            return [error]
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or not data:
            return [UpstreamError(BAD_RESPONSE, "Ark answered without any image")]
        if len(data) > asked:
            # The first ones are the images asked for (and billed); the rest would
            # become rows and store tasks nobody asked for.
            logger.warning(
                "Ark answered %d images where %d were asked for: keeping the first %d",
                len(data),
                asked,
                asked,
            )
            data = data[:asked]
        items: list[UpstreamItem] = []
        for entry in data:
            # Each item may fail on its own (for example a sensitive output image).
            item_error = _error_from_body(entry)
            if item_error is not None:
                items.append(item_error)
            elif isinstance(entry, dict) and isinstance(entry.get("url"), str) and entry["url"]:
                items.append(_image_item(entry))
            elif isinstance(entry, dict) and isinstance(entry.get("b64_json"), str):
                items.append(_inline_image_item(entry))
            else:
                items.append(UpstreamError(BAD_RESPONSE, "an image item without a URL"))
        return items


@dataclass(frozen=True)
class _Outcome:
    """What one try gave: its items, whether another try may help, and when to make it."""

    items: list[UpstreamItem]
    retry: bool = False
    retry_after: float | None = None
    usage: UpstreamUsage | None = None
    # How many of the items were handed on already, as they arrived.
    delivered: int = 0


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        return None
    return value


def _usage(usage: Any) -> UpstreamUsage | None:
    """Ark's ``usage``, or None when it sent none (or something else)."""
    if not isinstance(usage, dict):
        return None
    counted = UpstreamUsage(
        generated_images=_count(usage.get("generated_images")),
        output_tokens=_count(usage.get("output_tokens")),
    )
    if counted.generated_images is None and counted.output_tokens is None:
        return None
    return counted


# -- Ark's streamed answer ---------------------------------------------------------------

EVENT_SUCCEEDED = "image_generation.partial_succeeded"
EVENT_FAILED = "image_generation.partial_failed"
EVENT_COMPLETED = "image_generation.completed"
# More events than this in one answer is not Ark: 15 images, the end, and some previews.
MAX_STREAM_EVENTS = 64


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str


def sse_events(pieces: Iterator[bytes]) -> Iterator[ServerSentEvent]:
    """Server-sent events from a body arriving in pieces: ``event:`` and ``data:`` lines,
    an event ending at a blank line; comments and other fields are skipped. Lines end in
    LF or CRLF."""
    buffer = b""
    event, data = "", list[str]()
    for piece in pieces:
        buffer += piece
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
            if not line:
                if data:
                    yield ServerSentEvent(event=event, data="\n".join(data))
                event, data = "", []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if buffer.strip():
        name, _, value = buffer.decode("utf-8", errors="replace").partition(":")
        if name == "data":
            data.append(value.removeprefix(" ").rstrip("\r"))
    if data:
        yield ServerSentEvent(event=event, data="\n".join(data))


class _EventStream:
    """The items of one streamed answer, as its events arrive."""

    def __init__(self, *, asked: int, on_item: OnItem | None) -> None:
        self.asked = asked
        self.on_item = on_item
        self.items: list[UpstreamItem] = []
        self.usage: UpstreamUsage | None = None
        self.finished = False
        self.events = 0

    @property
    def images(self) -> int:
        return sum(1 for item in self.items if not isinstance(item, UpstreamError))

    def _add(self, item: UpstreamItem) -> None:
        self.items.append(item)
        if self.on_item is not None:
            self.on_item(item)

    def end(self, error: UpstreamError) -> None:
        self._add(error)
        self.finished = True

    def take(self, event: ServerSentEvent) -> bool:
        """Take one event in; False once the stream has nothing more to say."""
        self.events += 1
        if event.data.strip() == "[DONE]":
            self.finished = True
            return False
        if self.events > MAX_STREAM_EVENTS:
            self.end(UpstreamError(BAD_RESPONSE, f"Ark sent over {MAX_STREAM_EVENTS} events"))
            return False
        try:
            payload: Any = json.loads(event.data)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            self._add(UpstreamError(BAD_RESPONSE, "Ark sent an event that is not JSON"))
            return True
        kind = str(payload.get("type") or event.event)
        if kind == EVENT_COMPLETED:
            self.usage = _usage(payload.get("usage"))
            self.finished = True
            return True  # [DONE] may follow; nothing else should
        if kind in (EVENT_SUCCEEDED, EVENT_FAILED):
            if len(self.items) >= self.asked:
                logger.warning("Ark streamed more images than the %d asked for", self.asked)
                return True
            error = _error_from_body(payload)
            if kind == EVENT_FAILED or error is not None:
                self._add(error or UpstreamError(BAD_RESPONSE, "a failed image without an error"))
            elif isinstance(payload.get("url"), str) and payload["url"]:
                self._add(_image_item(payload))
            elif isinstance(payload.get("b64_json"), str):
                self._add(_inline_image_item(payload))
            else:
                self._add(UpstreamError(BAD_RESPONSE, "an image event without a URL"))
            return True
        error = _error_from_body(payload)
        if error is not None:  # the whole request failed: Ark's "error" event
            self.end(error)
            return False
        return True  # a preview (partial_image) or something new: not an image we keep


def _first_code(items: list[UpstreamItem]) -> str:
    return items[0].code if items and isinstance(items[0], UpstreamError) else "?"


def _failed_before_sending(exc: requests.exceptions.RequestException) -> bool:
    """Whether the request never left: no connection could be made (refused, unreachable,
    a name that does not resolve). Anything later may have reached Ark, and be billed."""
    if not isinstance(exc, requests.exceptions.ConnectionError) or isinstance(
        exc, requests.exceptions.SSLError
    ):
        return False
    reason: Any = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    )


def _image_item(entry: dict[str, Any]) -> UpstreamItem:
    """The image of one answered item, or why its URL is not one we keep and link."""
    try:
        url = checked_external_url(entry["url"])
    except UnsafeUrl as exc:
        return UpstreamError(
            UNSAFE_IMAGE_URL, _short(f"Ark answered an image URL we refuse: {exc}")
        )
    return UpstreamImage(
        url=url,
        size=_short(str(entry.get("size") or ""))[:40],
        expires_at=external_url_expiry(url),
    )


def _inline_image_item(entry: dict[str, Any]) -> UpstreamItem:
    """The bytes of an image answered as ``b64_json``, or why they are not an image's."""
    try:
        data = base64.b64decode(entry["b64_json"], validate=True)
    except (binascii.Error, ValueError):
        return UpstreamError(BAD_RESPONSE, "an image item whose b64_json is not base64")
    if not data:
        return UpstreamError(BAD_RESPONSE, "an image item whose b64_json is empty")
    return UpstreamInlineImage(data=data, size=_short(str(entry.get("size") or ""))[:40])


_clients: dict[tuple[str, str, float, float, int, float, float, float], ArkClient] = {}
_clients_lock = threading.Lock()


# Ark streams Seedream 4.0, 4.5 and 5.0 lite; not 3.0, SeedEdit 3.0 or 5.0 pro. BytePlus
# spells the same ids without "doubao-".
def client_for(model: ImageModel) -> ArkClient:
    """The client that serves ``model``: Ark with our key, or the demo upstream.

    The demo upstream serves demo models, and every model when no Ark key is set.
    Clients are kept per configuration so that their connections are reused.
    """
    from generations.models import ImageModel

    if model.provider == ImageModel.Provider.DEMO or not settings.ARK_API_KEY:
        base_url = settings.DEMO_UPSTREAM_URL.rstrip("/") + "/api/v3"
        api_key = DEMO_API_KEY
    else:
        base_url = settings.ARK_BASE_URL
        api_key = settings.ARK_API_KEY
    key = (
        base_url,
        api_key,
        float(settings.ARK_CONNECT_TIMEOUT),
        float(settings.ARK_READ_TIMEOUT),
        int(settings.ARK_MAX_RETRIES),
        float(settings.ARK_TOTAL_TIMEOUT),
        float(settings.ARK_RETRY_BACKOFF_SECONDS),
        float(settings.ARK_RETRY_BUDGET_SECONDS),
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = ArkClient(
                base_url=base_url,
                api_key=api_key,
                connect_timeout=key[2],
                read_timeout=key[3],
                max_retries=key[4],
                total_timeout=key[5],
                retry_backoff=key[6],
                retry_budget=key[7],
            )
            _clients[key] = client
        return client
