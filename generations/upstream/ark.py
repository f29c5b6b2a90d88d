"""The client for Volcengine Ark's image generation API (Seedream, SeedEdit).

One call asks one model for one or more images. Whatever goes wrong upstream or on
the network comes back as an ``UpstreamError`` item, never as an exception, so that
a generation asking several models at once records each model's outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import requests
from django.conf import settings

if TYPE_CHECKING:
    from generations.models import ImageModel

logger = logging.getLogger(__name__)

DEMO_API_KEY = "demo"
# Codes of our own, for trouble that never produced an Ark error body.
TIMEOUT = "UpstreamTimeout"
CONNECTION_ERROR = "UpstreamConnectionError"
HTTP_ERROR = "UpstreamHTTPError"
BAD_RESPONSE = "UpstreamBadResponse"

RETRYABLE_STATUSES = frozenset({429, *range(500, 600)})
# Error messages end up in the database and the gallery: keep them readable.
MAX_MESSAGE_LENGTH = 1000
TOS_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class UpstreamImage:
    url: str
    size: str
    expires_at: datetime | None


@dataclass(frozen=True)
class UpstreamError:
    code: str
    message: str


UpstreamItem = UpstreamImage | UpstreamError


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
        retry_backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max(0, max_retries)
        self.retry_backoff = retry_backoff
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
    ) -> dict[str, Any]:
        """The JSON Ark receives: only the options this model takes."""
        body: dict[str, Any] = {
            "model": model_id,
            "prompt": prompt,
            "response_format": "url",
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
        max_images = params.get("max_images")
        if "sequential" in capabilities and max_images is not None and int(max_images) > 1:
            body["sequential_image_generation"] = "auto"
            body["sequential_image_generation_options"] = {"max_images": int(max_images)}
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
        try:
            body = self.request_body(
                model_id=model_id,
                prompt=prompt,
                size=size,
                params=params,
                image=image,
                capabilities=capabilities,
            )
        except (TypeError, ValueError) as exc:
            return [UpstreamError(code="InvalidParameter", message=_short(f"bad params: {exc}"))]
        return self._post_with_retries(body)

    def _post_with_retries(self, body: dict[str, Any]) -> list[UpstreamItem]:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        attempt = 0
        while True:
            outcome, retryable = self._post_once(body, headers)
            if not retryable or attempt >= self.max_retries:
                return outcome
            # Short, growing pauses: a generation request is waiting on us.
            delay = self.retry_backoff * (2**attempt)
            attempt += 1
            logger.info(
                "Ark call failed (%s), retry %d of %d in %.1fs",
                outcome[0].code if outcome and isinstance(outcome[0], UpstreamError) else "?",
                attempt,
                self.max_retries,
                delay,
            )
            time.sleep(delay)

    def _post_once(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[list[UpstreamItem], bool]:
        """The outcome of one HTTP call, and whether trying again may help."""
        try:
            response = self._session().post(
                self.endpoint,
                json=body,
                headers=headers,
                timeout=(self.connect_timeout, self.read_timeout),
                # A redirect would carry the key somewhere else: Ark never redirects.
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout as exc:
            return [UpstreamError(TIMEOUT, _short(f"connecting to Ark timed out: {exc}"))], True
        except requests.exceptions.Timeout as exc:
            # The request reached Ark and may be generating (and billed): not retried.
            return [UpstreamError(TIMEOUT, _short(f"Ark did not answer in time: {exc}"))], False
        except requests.exceptions.ConnectionError as exc:
            return [UpstreamError(CONNECTION_ERROR, _short(f"cannot reach Ark: {exc}"))], True
        except requests.exceptions.RequestException as exc:
            return [UpstreamError(CONNECTION_ERROR, _short(f"Ark call failed: {exc}"))], False

        try:
            payload: Any = response.json()
        except ValueError:
            payload = None
        status = response.status_code
        if status >= 300:
            error = _error_from_body(payload) or UpstreamError(
                HTTP_ERROR, _short(f"Ark answered HTTP {status}: {response.text[:300]}")
            )
            return [error], status in RETRYABLE_STATUSES
        return self._items_from_payload(payload), False

    @staticmethod
    def _items_from_payload(payload: Any) -> list[UpstreamItem]:
        error = _error_from_body(payload)
        if error is not None:
            return [error]
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or not data:
            return [UpstreamError(BAD_RESPONSE, "Ark answered without any image")]
        items: list[UpstreamItem] = []
        for entry in data:
            # Each item may fail on its own (for example a sensitive output image).
            item_error = _error_from_body(entry)
            if item_error is not None:
                items.append(item_error)
            elif isinstance(entry, dict) and isinstance(entry.get("url"), str) and entry["url"]:
                url = entry["url"]
                items.append(
                    UpstreamImage(
                        url=url,
                        size=str(entry.get("size") or ""),
                        expires_at=external_url_expiry(url),
                    )
                )
            else:
                items.append(UpstreamError(BAD_RESPONSE, "an image item without a URL"))
        return items


_clients: dict[tuple[str, str, float, float, int], ArkClient] = {}
_clients_lock = threading.Lock()


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
            )
            _clients[key] = client
        return client
