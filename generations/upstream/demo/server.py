"""A small Ark-compatible image generation server, for development, tests and benchmarks.

It answers ``POST /api/v3/images/generations`` with Ark's request, response and error
shapes, renders real images locally with Pillow, and serves them at TOS-style signed
URLs that answer 403 ``AccessDenied`` once expired or tampered with, as Ark's do (with
the JSON error body TOS sends). The embedded default (no ``ARK_API_KEY``) talks to it,
so genvault works offline.

Markers in the prompt switch faults on, so that tests and benchmarks can reproduce what
a real upstream or image host does on a bad day. Several may be combined; they are
stripped from the text drawn on the image. Unknown markers answer 400 InvalidParameter.

Generation (the POST):

=========================  ===========================================================
``[demo:slow=S]``          sleep S seconds (float, up to 60) before answering
``[demo:status=CODE]``     answer HTTP CODE (400-599) with an Ark error body; 429 is
                           ``RateLimitExceeded.EndpointRPMExceeded``, 500
                           ``InternalServiceError``
``[demo:error=CODE]``      Ark's error CODE with the HTTP status Ark gives it (429 for
                           ``QuotaExceeded`` and the rate limits, 403 ``AccessDenied``...;
                           400 for a code Ark does not list)
``[demo:flaky=N]``         the first N calls (up to 100) with this exact prompt answer the
                           error ``status`` or ``error`` names (500 when neither), then OK
``[demo:retry_after=S]``   error answers carry ``Retry-After: S`` (whole seconds, up to 120).
                           Ark's documentation shows no Retry-After: a client must not need it
``[demo:latency=S]``       each image takes S seconds (float, up to 60) to make: a streamed
                           group sends one event every S seconds, an answer that is not
                           streamed comes after all of them
``[demo:images=N]``        the model decides to make N images (up to 15): ``max_images`` is
                           a ceiling, as on Ark, and without this switch the demo fills it
``[demo:cut_stream=N]``    a streamed answer breaks off after N image events, mid-stream
``[demo:stall_stream=N]``  a streamed answer goes silent after N image events, the
                           connection held open (until the client leaves, at most 60 s)
=========================  ===========================================================

Streaming (``"stream": true``) answers ``text/event-stream`` as Ark does: one
``image_generation.partial_succeeded`` event per image (``url`` or ``b64_json``, ``size``,
``image_index``), ``image_generation.partial_failed`` for an image that failed (with
``[demo:item_error]``), then ``image_generation.completed`` with ``usage``, then
``data: [DONE]``. A group (``sequential_image_generation: "auto"``) makes at most
``max_images`` (default 15) images, and at most 15 minus the number of reference images.

Other generation switches:

=========================  ===========================================================
``[demo:item_error]``      HTTP 200, but the first data item is ``{"error": {"code":
                           "OutputImageSensitiveContentDetected", ...}}`` (the others, with
                           sequential generation, are images)
``[demo:png]``             render PNG instead of JPEG
``[demo:webp]``            render WebP instead of JPEG
``[demo:big=MB]``          serve a real JPEG of about MB MiB (noise; made once per size and
                           cached; up to 256 MiB, ~0.7 s per 100 MiB the first time)
``[demo:photo=MB]``        serve a realistic 2048x2048 JPEG of about MB MiB (a rendered
                           scene with film grain, the quality searched to fit; cached
                           per size; up to 8), like a Seedream 2K image
``[demo:host=FORM]``       write the image URL with another loopback spelling: ``127.0.0.2``,
                           ``[::1]``, ``2130706433``, ``[::ffff:127.0.0.1]``, ``localhost``
=========================  ===========================================================

Image serving (baked into the signed URL as the ``fault`` query parameter, so the URL
alone reproduces it):

=============================  =======================================================
``[demo:expired]``             X-Tos-Date lies in the past: the URL answers 403 at once
``[demo:truncated]``           declares the full Content-Length, sends half, closes
``[demo:oversized=MB]``        streams MB MiB (up to 1024: a JPEG start, then padding)
``[demo:oversized_chunked=MB]``  the same, chunked, without Content-Length
``[demo:html]``                an HTML page, ``text/html``
``[demo:svg]``                 an SVG holding a script, ``image/svg+xml``
``[demo:wrong_type]``          real PNG bytes declared ``image/jpeg``
``[demo:text_type]``           real JPEG bytes declared ``text/plain``
``[demo:flaky_image=N]``       the first N GETs (up to 100) of the URL answer 503
``[demo:slow_image=S]``        headers at once, then the body dripped over S seconds (up to 60)
``[demo:bomb]``                a ~110 KB PNG claiming 30000x30000 pixels
``[demo:redirect_loopback]``   302 to the same image at ``http://localhost:PORT/...``
``[demo:redirect=N]``          N chained 302s (up to 10, each to the URL with N-1), then the
                               image
=============================  =======================================================

A switch asking for more than its maximum answers 400 InvalidParameter: a fault that
lasts or streams for ever would only hold a thread, and the test waiting on it, hostage.

Each Ark model's size rules (``MODEL_SIZE_RULES``) are kept as Ark keeps them: a size
the model does not take answers 400 ``InvalidParameter``, "The parameter `size`
specified in the request is not valid: ...". Other models (``demo-...``, an ``ep-...``
endpoint) take any size. So are their optional parameters (``MODEL_OPTIONS``): a
``optimize_prompt_options.mode`` or an ``output_format`` the model does not take answers
400 ``InvalidParameter``; ``output_format: "png"`` renders a PNG.

``GET /_demo/requests`` returns the last 200 requests received (except ``/_demo/`` ones)
as JSON: ``[{"method", "path", "host", "headers", "json", "time"}]``; ``DELETE`` clears
it. A string over 256 KiB in it (a reference image of several MB, say) keeps its first
64 characters, its length and its SHA-256, and the log keeps at most 8 MiB in all, so
that image-to-image traffic cannot grow the server without end. ``GET /_demo/stats``
says what the server holds: the log, the stored images and the cached big images.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import math
import os
import random
import re
import secrets
import socket
import socketserver
import struct
import textwrap
import threading
import time
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

API_PATH = "/api/v3/images/generations"
REQUESTS_PATH = "/_demo/requests"
STATS_PATH = "/_demo/stats"
IMAGE_PATH_RE = re.compile(r"/images/([0-9a-f]{32})\.(jpeg|png|webp)")
MARKER_RE = re.compile(r"\[demo:([a-z_]+)(?:=(\[[^\]]*\]|[^\]]*))?\]", re.IGNORECASE)
TOS_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MiB = 1024 * 1024

MAX_REQUEST_BYTES = 20 * MiB  # a data: URI reference image may be large
MAX_STORED_IMAGES = 500
MAX_STORED_BYTES = 1024 * MiB
MAX_LOGGED_REQUESTS = 200
# Longer strings are logged as their start, length and digest: a 1K reference image
# (about 80 KB of base64) is kept whole for the tests that compare it.
MAX_LOGGED_STRING_CHARS = 256 * 1024
MAX_LOGGED_ENTRY_BYTES = 1 * MiB
MAX_LOG_BYTES = 8 * MiB
MAX_LOGGED_DEPTH = 32
MAX_COUNTERS = 10_000
MAX_SIDE = 4096
MIN_SIDE = 16
MAX_BIG_MB = 256
MAX_PHOTO_MB = 8
PHOTO_SIDE = 2048
BOMB_SIDE = 30_000
MAX_RETRY_AFTER = 120
# Ark's ceiling for one group: reference images and the images made, together.
MAX_GROUP = 15
MAX_REFERENCES = 14
EVENT_SUCCEEDED = "image_generation.partial_succeeded"
EVENT_FAILED = "image_generation.partial_failed"
EVENT_COMPLETED = "image_generation.completed"
# The most each numeric switch takes.
SWITCH_LIMITS: dict[str, float] = {
    "slow": 60,
    "slow_image": 60,
    "flaky": 100,
    "flaky_image": 100,
    "retry_after": MAX_RETRY_AFTER,
    "latency": 60,
    "images": MAX_GROUP,
    "cut_stream": MAX_GROUP,
    "stall_stream": MAX_GROUP,
    "redirect": 10,
    "oversized": 1024,
    "oversized_chunked": 1024,
    "big": MAX_BIG_MB,
    "photo": MAX_PHOTO_MB,
}
SWITCH_UNITS = {"slow": " seconds", "slow_image": " seconds", "big": " MB", "photo": " MB"}
SWITCH_UNITS.update(retry_after=" seconds", latency=" seconds")
SWITCH_UNITS.update(oversized=" MB", oversized_chunked=" MB")
# Cached renders, most recently used first out of the budget last: a big image of each
# size asked for would otherwise stay for ever. One of the largest always fits.
BIG_CACHE_ENTRIES = 4
BIG_CACHE_BYTES = 2 * MAX_BIG_MB * MiB
PHOTO_CACHE_ENTRIES = 8
PHOTO_CACHE_BYTES = 8 * MAX_PHOTO_MB * MiB

SIZE_LABELS = {"1k": 1024, "2k": 2048, "3k": 3072, "4k": 4096}
# Ark's size rules for each model it serves, as its image generation API reference gives
# them, in the shape genvault keeps them (generations.sizes.SizeRules). A model not listed
# here (demo-..., an ep-... endpoint) takes any size.
_ARK_4_SIZES: dict[str, Any] = {
    "adaptive": False,
    "width_height": True,
    "max_pixels": 16_777_216,
    "min_aspect_ratio": 1 / 16,
    "max_aspect_ratio": 16.0,
    "min_side": None,
    "max_side": None,
}
_SEEDREAM_5_LITE_SIZES = {**_ARK_4_SIZES, "labels": ["2K", "3K", "4K"], "min_pixels": 3_686_400}
MODEL_SIZE_RULES: dict[str, dict[str, Any]] = {
    "doubao-seedream-5-0-260128": _SEEDREAM_5_LITE_SIZES,
    "doubao-seedream-5-0-lite-260128": _SEEDREAM_5_LITE_SIZES,
    "doubao-seedream-4-5-251128": {**_ARK_4_SIZES, "labels": ["2K", "4K"], "min_pixels": 3_686_400},
    "doubao-seedream-4-0-250828": {
        **_ARK_4_SIZES,
        "labels": ["1K", "2K", "4K"],
        "min_pixels": 921_600,
    },
    "doubao-seedream-3-0-t2i-250415": {
        "labels": [],
        "adaptive": False,
        "width_height": True,
        "min_pixels": None,
        "max_pixels": None,
        "min_aspect_ratio": None,
        "max_aspect_ratio": None,
        "min_side": 512,
        "max_side": 2048,
    },
    "doubao-seededit-3-0-i2i-250628": {
        "labels": [],
        "adaptive": True,
        "width_height": False,
        "min_pixels": None,
        "max_pixels": None,
        "min_aspect_ratio": None,
        "max_aspect_ratio": None,
        "min_side": None,
        "max_side": None,
    },
}
# The optional parameters each Ark model takes, as its API reference lists them: prompt
# optimization (``optimize_prompt_options.mode``) and the output file format
# (``output_format``, png or jpeg, Seedream 5.0 lite alone). A value a model does not take
# answers 400 InvalidParameter; models not listed here take either.
MODEL_OPTIONS: dict[str, dict[str, list[str]]] = {
    "doubao-seedream-5-0-260128": {"modes": ["standard"], "formats": ["png", "jpeg"]},
    "doubao-seedream-5-0-lite-260128": {"modes": ["standard"], "formats": ["png", "jpeg"]},
    "doubao-seedream-4-5-251128": {"modes": ["standard"], "formats": []},
    "doubao-seedream-4-0-250828": {"modes": ["standard", "fast"], "formats": []},
    "doubao-seedream-3-0-t2i-250415": {"modes": [], "formats": []},
    "doubao-seededit-3-0-i2i-250628": {"modes": [], "formats": []},
}
LOOPBACK_HOST_FORMS = {
    "127.0.0.1": "127.0.0.1",
    "127.0.0.2": "127.0.0.2",
    "localhost": "localhost",
    "2130706433": "2130706433",
    "::1": "[::1]",
    "[::1]": "[::1]",
    "::ffff:127.0.0.1": "[::ffff:127.0.0.1]",
    "[::ffff:127.0.0.1]": "[::ffff:127.0.0.1]",
}

# switch name -> kind of value: None (a flag), "float", "int", "code", "host"
GENERATION_SWITCHES: dict[str, str | None] = {
    "slow": "float",
    "status": "int",
    "flaky": "int",
    "error": "code",
    "retry_after": "int",
    "latency": "float",
    "images": "int",
    "cut_stream": "int",
    "stall_stream": "int",
    "item_error": None,
    "png": None,
    "webp": None,
    "big": "float",
    "photo": "float",
    "host": "host",
}
SERVING_FAULTS: dict[str, str | None] = {
    "expired": None,
    "truncated": None,
    "oversized": "float",
    "oversized_chunked": "float",
    "html": None,
    "svg": None,
    "wrong_type": None,
    "text_type": None,
    "flaky_image": "int",
    "slow_image": "float",
    "bomb": None,
    "redirect_loopback": None,
    "redirect": "int",
}

STATUS_ERRORS = {
    400: ("InvalidParameter", "BadRequest", "The request is invalid."),
    401: ("AuthenticationError", "Unauthorized", "The API key is missing or invalid."),
    403: ("AccessDenied", "Forbidden", "You do not have access to this resource."),
    404: ("InvalidEndpointOrModel.NotFound", "NotFound", "The model does not exist."),
    429: (
        "RateLimitExceeded.EndpointRPMExceeded",
        "TooManyRequests",
        "The Requests Per Minute (RPM) limit of the associated endpoint for your account "
        "has been exceeded.",
    ),
    500: ("InternalServiceError", "InternalServerError", "The service encountered an error."),
    502: ("BadGateway", "BadGateway", "The service is temporarily unreachable."),
    503: ("ServiceUnavailable", "ServiceUnavailable", "The service is overloaded."),
    504: ("GatewayTimeout", "GatewayTimeout", "The service did not answer in time."),
}
# Ark's own codes (its error code reference and image generation API): the HTTP status
# each comes with, and a message in the spirit of Ark's. A 429 is not always a rate
# limit: a spent quota or spending cap comes as 429 too, and waiting does not clear it.
ARK_ERRORS: dict[str, tuple[int, str]] = {
    "MissingParameter": (
        400,
        "The request failed because it is missing one or multiple required parameters.",
    ),
    "InvalidParameter": (400, "One or more parameters specified in the request are not valid."),
    "SensitiveContentDetected": (
        400,
        "The request failed because the input text may contain sensitive information.",
    ),
    "InputTextSensitiveContentDetected": (
        400,
        "The request failed because the input text may contain sensitive information.",
    ),
    "InputImageSensitiveContentDetected": (
        400,
        "The request failed because the input image may contain sensitive information.",
    ),
    "OutputImageSensitiveContentDetected": (
        400,
        "The request failed because the output image may contain sensitive information.",
    ),
    "AuthenticationError": (401, "The API key or AK/SK in the request is missing or invalid."),
    "AccountOverdueError": (
        403,
        "The request failed because your account has an overdue balance.",
    ),
    "AccessDenied": (
        403,
        "The request failed because you do not have access to the requested resource.",
    ),
    "InvalidEndpointOrModel.NotFound": (
        404,
        "The model or endpoint does not exist or you do not have access to it.",
    ),
    "ModelNotOpen": (404, "Your account has not activated the model."),
    "RateLimitExceeded.EndpointRPMExceeded": (429, STATUS_ERRORS[429][2]),
    "RateLimitExceeded.EndpointTPMExceeded": (
        429,
        "The Tokens Per Minute (TPM) limit of the associated endpoint for your account "
        "has been exceeded.",
    ),
    "ModelAccountRpmRateLimitExceeded": (
        429,
        "The Requests Per Minute (RPM) limit of the model for your account has been exceeded.",
    ),
    "ModelAccountTpmRateLimitExceeded": (
        429,
        "The Tokens Per Minute (TPM) limit of the model for your account has been exceeded.",
    ),
    "ModelAccountIpmRateLimitExceeded": (
        429,
        "The Images Per Minute (IPM) limit of the model for your account has been exceeded.",
    ),
    "APIAccountRpmRateLimitExceeded": (
        429,
        "The Requests Per Minute (RPM) limit of the API for your account has been exceeded.",
    ),
    "AccountRateLimitExceeded": (429, "The rate limit of your account has been exceeded."),
    "RequestBurstTooFast": (
        429,
        "Your requests increased too fast. Please ramp up your traffic gradually.",
    ),
    "ServerOverloaded": (
        429,
        "The service is currently unable to handle additional requests due to server overload.",
    ),
    "QuotaExceeded": (
        429,
        "The request failed because you have exceeded the usage quota of the model.",
    ),
    "SetLimitExceeded": (
        429,
        "The request failed because you have reached the inference limit you set for the model.",
    ),
    "InternalServiceError": (500, "The service encountered an unexpected internal error."),
}
# The demo's EC ("error code", TOS's finer-grained one) for each image host error it sends.
TOS_ERROR_EC = {
    "AccessDenied": "0003-00000001",
    "NoSuchKey": "0017-00000003",
    "NotFound": "0017-00000001",
    "ServiceUnavailable": "0006-00000001",
}
# Kept for the item errors of a 200 answer.
ERROR_MESSAGES = {code: message for code, (_, message) in ARK_ERRORS.items()}

HTML_PAGE = (
    b"<!doctype html><html><head><title>Sign in</title></head><body>"
    b"<h1>This is not an image</h1><script>document.title='owned'</script></body></html>"
)
SVG_IMAGE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b"<script>alert(document.domain)</script>"
    b'<rect width="64" height="64" fill="red"/></svg>'
)


class SwitchError(ValueError):
    """A prompt marker or parameter that the demo upstream cannot honour."""


def parse_switches(prompt: str) -> tuple[str, dict[str, str]]:
    """The prompt without its ``[demo:...]`` markers, and the markers as name -> value."""
    switches: dict[str, str] = {}
    for match in MARKER_RE.finditer(prompt):
        name = match.group(1).lower()
        value = match.group(2)
        kind = GENERATION_SWITCHES.get(name, SERVING_FAULTS.get(name, "unknown"))
        if kind == "unknown":
            raise SwitchError(f"unknown demo switch [demo:{name}]")
        if kind is None:
            if value:
                raise SwitchError(f"[demo:{name}] takes no value")
            switches[name] = ""
            continue
        if not value:
            raise SwitchError(f"[demo:{name}=...] needs a value")
        _check_value(name, kind, value)
        switches[name] = value
    text = " ".join(MARKER_RE.sub(" ", prompt).split())
    return text, switches


def _check_value(name: str, kind: str, value: str) -> None:
    try:
        if kind == "float" and not (0 <= float(value) < math.inf):
            raise ValueError
        if kind == "int" and int(value) < 0:
            raise ValueError
    except ValueError:
        raise SwitchError(f"[demo:{name}={value}]: not a valid number") from None
    if kind == "code" and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.]*", value):
        raise SwitchError(f"[demo:{name}={value}]: not an error code")
    if kind == "host" and value.lower() not in LOOPBACK_HOST_FORMS:
        raise SwitchError(f"[demo:host={value}]: one of {', '.join(sorted(LOOPBACK_HOST_FORMS))}")
    if name == "status" and not 400 <= int(value) <= 599:
        raise SwitchError("[demo:status=CODE] needs a code from 400 to 599")
    limit = SWITCH_LIMITS.get(name)
    if limit is not None and float(value) > limit:
        raise SwitchError(
            f"[demo:{name}={value}]: supports up to {limit:g}{SWITCH_UNITS.get(name, '')}"
        )
    if name in ("photo", "big") and not float(value) > 0:
        raise SwitchError(f"[demo:{name}={value}]: needs more than 0 MB")


def encode_faults(faults: dict[str, str]) -> str:
    return ",".join(f"{name}={value}" if value else name for name, value in sorted(faults.items()))


def decode_faults(text: str) -> dict[str, str]:
    faults: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        faults[name] = value
    return faults


def parse_size(size: Any) -> tuple[int, int]:
    """Ark's size: ``1K``/``2K``/``4K``, ``WxH``, or ``adaptive``/absent (2048x2048)."""
    if size is None or size == "" or (isinstance(size, str) and size.lower() == "adaptive"):
        return 2048, 2048
    if not isinstance(size, str):
        raise SwitchError("size must be a string such as 2K or 1024x1024")
    label = size.strip().lower()
    if label in SIZE_LABELS:
        side = SIZE_LABELS[label]
        return side, side
    match = re.fullmatch(r"(\d{1,5})\s*[x*]\s*(\d{1,5})", label)
    if not match:
        raise SwitchError(f"size {size!r} is not 1K, 2K, 4K, adaptive or WxH")
    width, height = (min(MAX_SIDE, max(MIN_SIDE, int(v))) for v in match.groups())
    return width, height


def option_refusal(model: str, body: dict[str, Any]) -> tuple[str, str] | None:
    """The parameter and why Ark refuses it, when ``model`` does not take the prompt
    optimization mode or the output format asked for; None when it takes both (or
    neither is asked for: the SDK sends null for what it was not given)."""
    taken = MODEL_OPTIONS.get(model, {"modes": ["standard", "fast"], "formats": ["png", "jpeg"]})
    options = body.get("optimize_prompt_options")
    if options is not None:
        mode = options.get("mode") if isinstance(options, dict) else None
        if mode is not None and mode not in taken["modes"]:
            return "optimize_prompt_options.mode", f"{mode!r} is not supported by this model"
        if not isinstance(options, dict):
            return "optimize_prompt_options", 'it must be an object such as {"mode": "standard"}'
    output_format = body.get("output_format")
    if output_format is not None and output_format not in taken["formats"]:
        return "output_format", f"{output_format!r} is not supported by this model"
    return None


def size_refusal(model: str, size: Any) -> str | None:
    """Why Ark refuses ``size`` for ``model``, in its words, or None when it takes it.

    A size that is no size at all is left to ``parse_size``; an absent one (or JSON
    null, which the official SDK sends for every argument not given) is the default.
    """
    rules = MODEL_SIZE_RULES.get(model)
    if rules is None or size is None or size == "" or not isinstance(size, str):
        return None
    text = size.strip()
    if text.lower() == "adaptive":
        return None if rules["adaptive"] else "adaptive is not supported by this model"
    if text.lower() in SIZE_LABELS:
        label = text.upper()
        return None if label in rules["labels"] else f"{label} is not supported by this model"
    match = re.fullmatch(r"(\d{1,5})\s*[x*]\s*(\d{1,5})", text.lower())
    if not match:
        return None
    if not rules["width_height"]:
        return "only adaptive is supported by this model"
    width, height = int(match[1]), int(match[2])
    pixels = width * height
    if rules["min_pixels"] is not None and pixels < rules["min_pixels"]:
        return f"image size must be at least {rules['min_pixels']} pixels"
    if rules["max_pixels"] is not None and pixels > rules["max_pixels"]:
        return f"image size must be at most {rules['max_pixels']} pixels"
    low, high = rules["min_side"], rules["max_side"]
    if any(
        (low is not None and side < low) or (high is not None and side > high)
        for side in (width, height)
    ):
        return f"image width and height must be between {low} and {high} pixels"
    ratio = width / height
    low_ratio, high_ratio = rules["min_aspect_ratio"], rules["max_aspect_ratio"]
    if (low_ratio is not None and ratio < low_ratio) or (
        high_ratio is not None and ratio > high_ratio
    ):
        low_shown, high_shown = (
            str(Fraction(r).limit_denominator(1000)) if r is not None else "any"
            for r in (low_ratio, high_ratio)
        )
        return f"image aspect ratio (width / height) must be between {low_shown} and {high_shown}"
    return None


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def render_image(
    text: str,
    *,
    seed_material: str,
    width: int,
    height: int,
    image_format: str,
    watermark: bool,
) -> bytes:
    """A colourful pattern seeded by ``seed_material``, with ``text`` drawn on it."""
    rng = random.Random(hashlib.sha256(seed_material.encode(errors="surrogatepass")).digest())
    # Shapes are drawn small and scaled up: fast even at 4096x4096.
    scale = min(1.0, 384 / max(width, height))
    small_w, small_h = max(2, round(width * scale)), max(2, round(height * scale))
    corners = Image.new("RGB", (2, 2))
    corners.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(4)])
    canvas = corners.resize((small_w, small_h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas, "RGBA")
    for _ in range(rng.randrange(6, 14)):
        x0, y0 = rng.randrange(small_w), rng.randrange(small_h)
        radius = rng.randrange(
            max(2, min(small_w, small_h) // 12), max(3, min(small_w, small_h) // 3)
        )
        colour = (
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(80, 180),
        )
        box = (x0 - radius, y0 - radius, x0 + radius, y0 + radius)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    image = canvas.resize((width, height), Image.Resampling.BILINEAR)

    draw = ImageDraw.Draw(image)
    font_size = max(10, min(width, height) // 22)
    font = _font(font_size)
    chars_per_line = max(8, int(width / (font_size * 0.6)) - 2)
    lines = textwrap.wrap(text[:400], chars_per_line)[:8] or [""]
    y = max(4, height // 12)
    for line in lines:
        draw.text(
            (width // 20, y), line, fill="white", font=font, stroke_width=2, stroke_fill="black"
        )
        y += int(font_size * 1.3)
    if watermark:
        mark_font = _font(max(8, font_size // 2))
        draw.text(
            (width - width // 4, height - font_size),
            "AI generated",
            fill=(255, 255, 255),
            font=mark_font,
            stroke_width=1,
            stroke_fill="black",
        )

    out = io.BytesIO()
    if image_format == "PNG":
        image.save(out, "PNG", compress_level=1)
    elif image_format == "WEBP":
        image.save(out, "WEBP", quality=80, method=0)
    else:
        image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _usage(data: list[dict[str, Any]], pixels: int) -> dict[str, int]:
    """Ark's usage: the images made (failed ones are free) and their tokens."""
    tokens = pixels // 256  # Ark bills about one output token per 16x16 pixels
    return {
        "generated_images": sum(1 for item in data if "error" not in item),
        "output_tokens": tokens,
        "total_tokens": tokens,
    }


class _LruCache:
    """The most recently used renders, within a count and a byte budget (not thread-safe)."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[float, tuple[bytes, int, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: float) -> tuple[bytes, int, int] | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: float, value: tuple[bytes, int, int]) -> None:
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.bytes -= len(previous[0])
        self._entries[key] = value
        self.bytes += len(value[0])
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted[0])


_cache_lock = threading.Lock()
_big_jpegs = _LruCache(max_entries=BIG_CACHE_ENTRIES, max_bytes=BIG_CACHE_BYTES)
_bomb_png: bytes | None = None


def cache_stats() -> dict[str, int]:
    """How many renders the caches hold, and their bytes."""
    with _cache_lock:
        caches = (_big_jpegs, _photo_jpegs)
        return {
            "cachedImages": sum(len(cache) for cache in caches),
            "cachedBytes": sum(cache.bytes for cache in caches),
        }


def big_jpeg(megabytes: float) -> tuple[bytes, int, int]:
    """A real JPEG of about ``megabytes`` MiB (noise compresses badly), cached per size."""
    with _cache_lock:
        cached = _big_jpegs.get(megabytes)
        if cached:
            return cached
        sample = Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3))
        probe = io.BytesIO()
        sample.save(probe, "JPEG", quality=100, subsampling=0)
        bytes_per_pixel = len(probe.getvalue()) / (256 * 256)
        side = max(64, int(math.sqrt(megabytes * MiB / bytes_per_pixel)))
        noise = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        out = io.BytesIO()
        noise.save(out, "JPEG", quality=100, subsampling=0)
        result = (out.getvalue(), side, side)
        _big_jpegs.put(megabytes, result)
        return result


_photo_jpegs = _LruCache(max_entries=PHOTO_CACHE_ENTRIES, max_bytes=PHOTO_CACHE_BYTES)


def photo_jpeg(megabytes: float) -> tuple[bytes, int, int]:
    """A 2048x2048 JPEG of about ``megabytes`` MiB that decodes like a photograph.

    A rendered scene with gaussian grain; the JPEG quality is searched so the file
    lands near the wanted size, as a Seedream 2K image does (1-3 MiB). Cached per size.
    """
    with _cache_lock:
        cached = _photo_jpegs.get(megabytes)
        if cached:
            return cached
        scene = render_image(
            "bench photo",
            seed_material=f"photo|{megabytes}",
            width=PHOTO_SIDE,
            height=PHOTO_SIDE,
            image_format="PNG",
            watermark=False,
        )
        base = Image.open(io.BytesIO(scene)).convert("RGB")
        target = megabytes * MiB
        best = b""
        for sigma in (8, 16, 32, 64, 96):
            grain = Image.effect_noise((PHOTO_SIDE, PHOTO_SIDE), sigma).convert("RGB")
            grainy = Image.blend(base, grain, 0.35)
            low, high = 50, 98
            while low <= high:
                quality = (low + high) // 2
                out = io.BytesIO()
                grainy.save(out, "JPEG", quality=quality)
                data = out.getvalue()
                if abs(len(data) - target) < abs(len(best) - target):
                    best = data
                if len(data) < target:
                    low = quality + 1
                else:
                    high = quality - 1
            if abs(len(best) - target) <= 0.1 * target:
                break
        result = (best, PHOTO_SIDE, PHOTO_SIDE)
        _photo_jpegs.put(megabytes, result)
        return result


def bomb_png() -> bytes:
    """A valid ~110 KB PNG of 30000x30000 black pixels: 900 megapixels once decoded."""
    global _bomb_png
    with _cache_lock:
        if _bomb_png is None:

            def chunk(kind: bytes, data: bytes) -> bytes:
                crc = zlib.crc32(kind + data) & 0xFFFFFFFF
                return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

            header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 1, 0, 0, 0, 0)
            row = b"\x00" * (1 + BOMB_SIDE // 8 + 1)  # filter byte + 1-bit pixels
            compressor = zlib.compressobj(9)
            parts = [compressor.compress(row * 1000) for _ in range(BOMB_SIDE // 1000)]
            parts.append(compressor.flush())
            _bomb_png = (
                b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", header)
                + chunk(b"IDAT", b"".join(parts))
                + chunk(b"IEND", b"")
            )
        return _bomb_png


def _counter_key(key: str) -> str:
    # A digest: a key holds a prompt or a URL, which may be megabytes long.
    return hashlib.sha256(key.encode(errors="surrogatepass")).hexdigest()


def _loggable(value: Any, depth: int = 0) -> Any:
    """``value`` as the request log keeps it: long strings cut to start, length and digest."""
    if isinstance(value, str):
        if len(value) <= MAX_LOGGED_STRING_CHARS:
            return value
        digest = hashlib.sha256(value.encode(errors="surrogatepass")).hexdigest()
        return f"{value[:64]}…[{len(value)} characters, sha256 {digest}]"
    if depth >= MAX_LOGGED_DEPTH and isinstance(value, dict | list):
        return "…[nested too deep, not kept]"
    if isinstance(value, dict):
        return {_loggable(str(k)): _loggable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_loggable(item, depth + 1) for item in value]
    return value


def _json_size(value: Any) -> int:
    return len(json.dumps(value, default=str))


@dataclass(frozen=True)
class StoredImage:
    body: bytes
    content_type: str


class _DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    demo: DemoUpstream

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), slow in sandboxes.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _DemoHTTPServerV6(_DemoHTTPServer):
    address_family = socket.AF_INET6


class DemoUpstream:
    """The demo upstream: bound on construction, serving after ``start()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        url_ttl: int = 86400,
        extra_loopback_listeners: bool = True,
    ) -> None:
        self.host = host.strip("[]")
        self.url_ttl = url_ttl
        self._signing_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._stored_bytes = 0
        self._counters: OrderedDict[str, int] = OrderedDict()
        self._request_log: deque[tuple[dict[str, Any], int]] = deque()
        self._request_log_bytes = 0
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._servers = [self._bind(self.host, port)]
        self.port = int(self._servers[0].server_address[1])
        if extra_loopback_listeners and self.host in ("127.0.0.1", "localhost"):
            # So that a URL written as 127.0.0.2 or [::1] (host=FORM) really reaches us: a
            # fetcher that refuses it is then refusing something that would have worked.
            for extra_host in ("127.0.0.2", "::1"):
                try:
                    self._servers.append(self._bind(extra_host, self.port))
                except OSError:
                    logger.debug("demo upstream: cannot also listen on %s", extra_host)

    def _bind(self, host: str, port: int) -> _DemoHTTPServer:
        server_class = _DemoHTTPServerV6 if ":" in host else _DemoHTTPServer
        server = server_class((host, port), _DemoRequestHandler)
        server.demo = self
        return server

    # -- addresses -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - only ever advertised as loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def api_base_url(self) -> str:
        return self.base_url + "/api/v3"

    @property
    def listening_on(self) -> list[str]:
        return [str(server.server_address[0]) for server in self._servers]

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> DemoUpstream:
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="demo-upstream-" + str(server.server_address[0]),
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._threads:
            for server in self._servers:
                server.shutdown()
        for server in self._servers:
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def serve_forever(self) -> None:
        """Serve until ``stop()`` or Ctrl-C (KeyboardInterrupt reaches the caller)."""
        self.start()
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> DemoUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- state shared by the request threads ---------------------------------------

    @property
    def request_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [entry for entry, _ in self._request_log]

    def clear_request_log(self) -> None:
        with self._lock:
            self._request_log.clear()
            self._request_log_bytes = 0

    def log_request(self, entry: dict[str, Any]) -> None:
        """Keep ``entry`` (trimmed) among the last requests, within the log's byte budget."""
        entry = _loggable(entry)
        size = _json_size(entry)
        for field in ("json", "headers"):
            if size > MAX_LOGGED_ENTRY_BYTES:
                entry[field] = f"…[{_json_size(entry[field])} bytes of JSON, not kept]"
                size = _json_size(entry)
        with self._lock:
            self._request_log.append((entry, size))
            self._request_log_bytes += size
            while len(self._request_log) > MAX_LOGGED_REQUESTS or (
                self._request_log_bytes > MAX_LOG_BYTES and len(self._request_log) > 1
            ):
                _, dropped = self._request_log.popleft()
                self._request_log_bytes -= dropped

    def stats(self) -> dict[str, int]:
        with self._lock:
            held = {
                "requests": len(self._request_log),
                "requestLogBytes": self._request_log_bytes,
                "storedImages": len(self._images),
                "storedBytes": self._stored_bytes,
                "counters": len(self._counters),
            }
        return {**held, **cache_stats()}

    def count(self, key: str) -> int:
        """How many times ``key`` was counted, this time included (the latest keys only)."""
        digest = _counter_key(key)
        with self._lock:
            value = self._counters.pop(digest, 0) + 1
            self._counters[digest] = value
            while len(self._counters) > MAX_COUNTERS:
                self._counters.popitem(last=False)
            return value

    def peek_count(self, key: str) -> int:
        with self._lock:
            return self._counters.get(_counter_key(key), 0)

    def store_image(self, image: StoredImage) -> str:
        image_id = secrets.token_hex(16)
        with self._lock:
            self._images[image_id] = image
            self._stored_bytes += len(image.body)
            while self._images and (
                len(self._images) > MAX_STORED_IMAGES or self._stored_bytes > MAX_STORED_BYTES
            ):
                _, evicted = self._images.popitem(last=False)
                self._stored_bytes -= len(evicted.body)
        return image_id

    def stored_image(self, image_id: str) -> StoredImage | None:
        with self._lock:
            return self._images.get(image_id)

    # -- signed URLs -----------------------------------------------------------------

    def _signature(self, path: str, params: dict[str, str]) -> str:
        canonical = path + "\n" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        return hmac.new(self._signing_key, canonical.encode(), hashlib.sha256).hexdigest()

    def signed_url(
        self,
        path: str,
        *,
        faults: dict[str, str],
        signed_at: datetime | None = None,
        ttl: int | None = None,
        base_url: str | None = None,
    ) -> str:
        ttl = self.url_ttl if ttl is None else ttl
        signed_at = signed_at or datetime.now(UTC)
        params = {
            "X-Tos-Algorithm": "TOS4-HMAC-SHA256",
            "X-Tos-Credential": "demo",
            "X-Tos-Date": signed_at.strftime(TOS_DATE_FORMAT),
            "X-Tos-Expires": str(ttl),
            "X-Tos-SignedHeaders": "host",
        }
        if faults:
            params["fault"] = encode_faults(faults)
        params["X-Tos-Signature"] = self._signature(path, params)
        return f"{base_url or self.base_url}{path}?{urlencode(params)}"

    def check_signed(self, path: str, params: dict[str, str]) -> str | None:
        """Why this URL is refused (TOS answers 403 AccessDenied), or None when it is good."""
        signature = params.get("X-Tos-Signature", "")
        unsigned = {k: v for k, v in params.items() if k != "X-Tos-Signature"}
        if not signature or not hmac.compare_digest(signature, self._signature(path, unsigned)):
            return "The request signature we calculated does not match the signature you provided."
        try:
            signed_at = datetime.strptime(params["X-Tos-Date"], TOS_DATE_FORMAT).replace(tzinfo=UTC)
            expires_at = signed_at + timedelta(seconds=int(params["X-Tos-Expires"]))
        except (KeyError, ValueError):
            return "The request is missing a valid X-Tos-Date or X-Tos-Expires."
        if datetime.now(UTC) >= expires_at:
            return "Request has expired."
        return None


class _DemoRequestHandler(BaseHTTPRequestHandler):
    server: _DemoHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked bodies for oversized_chunked
    server_version = "DemoArk/1.0"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection does not hold a thread forever

    @property
    def demo(self) -> DemoUpstream:
        return self.server.demo

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("demo upstream %s: " + format, self.address_string(), *args)

    # -- plumbing ------------------------------------------------------------------

    def _record(self, body: Any = None) -> None:
        if urlsplit(self.path).path.startswith("/_demo/"):
            return
        headers = dict(self.headers.items())
        authorization = headers.get("Authorization")
        if authorization and authorization != "Bearer demo":
            # Enough to prove a key was sent, never the key itself.
            headers["Authorization"] = authorization.split(" ", 1)[0] + " <redacted>"
        self.demo.log_request(
            {
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host", ""),
                "headers": headers,
                "json": body,
                "time": time.time(),
            }
        )

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _ark_error(
        self,
        status: int,
        code: str,
        message: str,
        param: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        error_type = STATUS_ERRORS.get(status, ("", "Error", ""))[1]
        request_id = secrets.token_hex(16)
        self._send_json(
            status,
            {
                "error": {
                    "code": code,
                    "message": f"{message} Request id: {request_id}",
                    "param": param,
                    "type": error_type,
                }
            },
            {"X-Request-Id": request_id, **(headers or {})},
        )

    def _tos_error(self, status: int, code: str, message: str) -> None:
        """An error of the image host, in the shape TOS's error code overview gives: a
        JSON ``Error`` with Code, RequestId, HostId, Message and EC, the request id and
        the EC in headers too. The EC values are the demo's own (TOS says not to build
        on them); genvault reads only the status."""
        request_id = secrets.token_hex(16)
        ec = TOS_ERROR_EC.get(code, "0000-00000000")
        host = self.headers.get("Host") or "demo"
        self._send_json(
            status,
            {
                "Error": {
                    "Code": code,
                    "RequestId": request_id,
                    "HostId": host,
                    "Message": message,
                    "EC": ec,
                }
            },
            {"x-tos-request-id": request_id, "x-tos-id-2": request_id, "x-tos-ec": ec},
        )

    def _safely(self, handler: Any) -> None:
        try:
            handler()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            # The client went away (or read too slowly): nothing left to tell it.
            self.close_connection = True

    # -- routes ------------------------------------------------------------------------

    def do_POST(self) -> None:
        self._safely(self._post)

    def do_GET(self) -> None:
        self._safely(self._get)

    def do_HEAD(self) -> None:
        self._safely(self._get)

    def do_DELETE(self) -> None:
        self._record()
        if urlsplit(self.path).path == REQUESTS_PATH:
            self.demo.clear_request_log()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._tos_error(404, "NotFound", "No such resource.")

    def _get(self) -> None:
        self._record()
        url = urlsplit(self.path)
        if url.path == REQUESTS_PATH:
            self._send_json(200, self.demo.request_log)
        elif url.path == STATS_PATH:
            self._send_json(200, self.demo.stats())
        elif url.path in ("/", "/healthz"):
            self._send_json(200, {"status": "ok", "api": self.demo.api_base_url})
        elif IMAGE_PATH_RE.fullmatch(url.path):
            self._serve_image(url.path, url.query)
        else:
            self._tos_error(404, "NoSuchKey", "The specified key does not exist.")

    def _post(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = MAX_REQUEST_BYTES + 1  # unreadable: refused like a body too large
        if length > MAX_REQUEST_BYTES:
            self._record()
            self.close_connection = True
            self._ark_error(400, "InvalidParameter", "The request body is too large.")
            return
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            body = None
        self._record(body)
        if urlsplit(self.path).path != API_PATH:
            self._ark_error(404, "NotFound", f"No API at {urlsplit(self.path).path}.")
            return
        authorization = self.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._ark_error(
                401,
                "AuthenticationError",
                "The API key or AK/SK in the request is missing or invalid.",
            )
            return
        if not isinstance(body, dict):
            self._ark_error(400, "InvalidParameter", "The request body is not a JSON object.")
            return
        self._generate(body)

    # -- generation ------------------------------------------------------------------

    def _generate(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt")
        if prompt is None:  # the SDK sends null for what it was not given
            code = "MissingParameter"
            self._ark_error(400, code, ARK_ERRORS[code][1], param="prompt")
            return
        if not isinstance(prompt, str) or not prompt.strip():
            self._ark_error(
                400,
                "InvalidParameter",
                "The parameter `prompt` specified in the request is not valid: it is empty.",
                param="prompt",
            )
            return
        model = body.get("model")
        if not isinstance(model, str) or not model.startswith(("doubao-", "demo-", "ep-")):
            self._ark_error(
                404,
                "InvalidEndpointOrModel.NotFound",
                f"The model or endpoint {model} does not exist or you do not have access to it.",
            )
            return
        refusal = size_refusal(model, body.get("size"))
        if refusal:
            self._ark_error(
                400,
                "InvalidParameter",
                f"The parameter `size` specified in the request is not valid: {refusal}.",
            )
            return
        refused = option_refusal(model, body)
        if refused:
            param, why = refused
            self._ark_error(
                400,
                "InvalidParameter",
                f"The parameter `{param}` specified in the request is not valid: {why}.",
                param=param,
            )
            return
        try:
            text, switches = parse_switches(prompt)
            width, height = parse_size(body.get("size"))
            count = self._image_count(body, switches)
        except SwitchError as exc:
            self._ark_error(400, "InvalidParameter", str(exc))
            return

        if "slow" in switches:
            time.sleep(float(switches["slow"]))
        error = self._switched_error(switches)
        if "flaky" in switches:
            if self.demo.count(f"flaky:{prompt}") > int(switches["flaky"]):
                error = None  # the upstream has recovered
            elif error is None:
                code, _, message = STATUS_ERRORS[500]
                error = (500, code, message)
        if error is not None:
            status, code, message = error
            headers = {}
            if "retry_after" in switches:
                headers["Retry-After"] = str(int(switches["retry_after"]))
            self._ark_error(status, code, message, headers=headers)
            return

        if body.get("stream") is True:
            self._stream(body, text=text, switches=switches, count=count, size=(width, height))
            return
        data: list[dict[str, Any]] = []
        pixels = 0
        for index in range(count):
            item, item_pixels = self._next_image(
                body, text=text, switches=switches, index=index, size=(width, height)
            )
            data.append(item)
            pixels += item_pixels
        self._send_json(
            200,
            {
                "model": body["model"],
                "created": int(time.time()),
                "data": data,
                "usage": _usage(data, pixels),
            },
        )

    def _next_image(
        self,
        body: dict[str, Any],
        *,
        text: str,
        switches: dict[str, str],
        index: int,
        size: tuple[int, int],
    ) -> tuple[dict[str, Any], int]:
        """The next image of the answer (or its error item), after its latency."""
        if "latency" in switches:
            time.sleep(float(switches["latency"]))
        if index == 0 and "item_error" in switches:
            code = "OutputImageSensitiveContentDetected"
            return {"error": {"code": code, "message": ERROR_MESSAGES[code]}}, 0
        width, height = size
        return self._make_image(
            body, text=text, switches=switches, index=index, width=width, height=height
        )

    def _stream(
        self,
        body: dict[str, Any],
        *,
        text: str,
        switches: dict[str, str],
        count: int,
        size: tuple[int, int],
    ) -> None:
        """Answer as server-sent events, each image the moment it is made."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Request-Id", secrets.token_hex(16))
        self.end_headers()
        data: list[dict[str, Any]] = []
        pixels = 0
        cut_after = int(switches.get("cut_stream", MAX_GROUP + 1))
        stall_after = int(switches.get("stall_stream", MAX_GROUP + 1))
        for index in range(count):
            if index >= cut_after:
                self.close_connection = True  # mid-stream, without the last chunk
                return
            if index >= stall_after:
                self._stall()
                return
            item, item_pixels = self._next_image(
                body, text=text, switches=switches, index=index, size=size
            )
            data.append(item)
            pixels += item_pixels
            kind = EVENT_FAILED if "error" in item else EVENT_SUCCEEDED
            self._send_event(kind, {"image_index": index, **item}, model=body["model"])
        self._send_event(EVENT_COMPLETED, {"usage": _usage(data, pixels)}, model=body["model"])
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")

    def _stall(self) -> None:
        """Send nothing more, holding the connection until the client leaves (or 60 s)."""
        self.close_connection = True
        self.connection.settimeout(0.2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.demo.stopped:
            try:
                if not self.connection.recv(1024):
                    return  # the client has gone
            except TimeoutError:
                continue
            except OSError:
                return

    def _send_event(self, kind: str, fields: dict[str, Any], *, model: str) -> None:
        payload = {"type": kind, "model": model, "created": int(time.time()), **fields}
        self._send_chunk(f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode())

    def _send_chunk(self, data: bytes) -> None:
        """One piece of a chunked body; an empty one ends it."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    @staticmethod
    def _switched_error(switches: dict[str, str]) -> tuple[int, str, str] | None:
        """The error answer that ``status`` or ``error`` asks for, if either does."""
        if "status" in switches:
            status = int(switches["status"])
            code, _, message = STATUS_ERRORS.get(status, (f"DemoStatus{status}", "", "Demo."))
            return status, code, message
        if "error" in switches:
            code = switches["error"]
            status, message = ARK_ERRORS.get(code, (400, f"Demo error {code}."))
            return status, code, message
        return None

    @staticmethod
    def _image_count(body: dict[str, Any], switches: dict[str, str]) -> int:
        """How many images the model makes: one, or for a group up to its ceiling."""
        references = body.get("image")
        given = len(references) if isinstance(references, list) else int(bool(references))
        if given > MAX_REFERENCES:
            raise SwitchError(f"image takes at most {MAX_REFERENCES} reference images")
        if body.get("sequential_image_generation") != "auto":
            return 1
        options = body.get("sequential_image_generation_options") or {}
        if not isinstance(options, dict):
            raise SwitchError("sequential_image_generation_options must be an object")
        max_images = options.get("max_images")
        if max_images is None:
            max_images = MAX_GROUP  # Ark's default
        if isinstance(max_images, bool) or not isinstance(max_images, int):
            raise SwitchError("max_images must be an integer from 1 to 15")
        if not 1 <= max_images <= MAX_GROUP:
            raise SwitchError("max_images must be an integer from 1 to 15")
        # References and the images made stay within 15; the model picks how many.
        ceiling = min(max_images, MAX_GROUP - given)
        return max(1, min(ceiling, int(switches.get("images", ceiling))))

    def _make_image(
        self,
        body: dict[str, Any],
        *,
        text: str,
        switches: dict[str, str],
        index: int,
        width: int,
        height: int,
    ) -> tuple[dict[str, Any], int]:
        faults = {name: value for name, value in switches.items() if name in SERVING_FAULTS}
        extension = "jpeg"
        if "bomb" in switches:
            content, content_type, extension = bomb_png(), "image/png", "png"
            width = height = BOMB_SIDE
        elif "big" in switches:
            content, width, height = big_jpeg(float(switches["big"]))
            content_type = "image/jpeg"
        elif "photo" in switches:
            content, width, height = photo_jpeg(float(switches["photo"]))
            content_type = "image/jpeg"
        elif "html" in switches:
            content, content_type = HTML_PAGE, "text/html; charset=utf-8"
        elif "svg" in switches:
            content, content_type = SVG_IMAGE, "image/svg+xml"
        else:
            image_format = "JPEG"
            if "png" in switches or "wrong_type" in switches or body.get("output_format") == "png":
                image_format, extension = "PNG", "png"
            elif "webp" in switches:
                image_format, extension = "WEBP", "webp"
            seed_material = f"{body['prompt']}|{body.get('seed', -1)}|{index}|{body.get('image')}"
            content = render_image(
                text,
                seed_material=seed_material,
                width=width,
                height=height,
                image_format=image_format,
                # Ark's default is on; the SDK sends null for "not given".
                watermark=body.get("watermark") is not False,
            )
            content_type = f"image/{extension}"
            if "wrong_type" in switches:
                # The bytes are PNG, the URL and the header say JPEG.
                content_type, extension = "image/jpeg", "jpeg"
            elif "text_type" in switches:
                content_type = "text/plain"

        image_id = self.demo.store_image(StoredImage(body=content, content_type=content_type))
        path = f"/images/{image_id}.{extension}"
        signed_at = None
        if "expired" in switches:
            signed_at = datetime.now(UTC) - timedelta(seconds=self.demo.url_ttl + 3600)
        base_url = None
        if "host" in switches:
            base_url = f"http://{LOOPBACK_HOST_FORMS[switches['host'].lower()]}:{self.demo.port}"
        url = self.demo.signed_url(path, faults=faults, signed_at=signed_at, base_url=base_url)
        size = f"{width}x{height}"
        if body.get("response_format") == "b64_json":
            return {"b64_json": base64.b64encode(content).decode(), "size": size}, width * height
        return {"url": url, "size": size}, width * height

    # -- image serving -------------------------------------------------------------------

    def _serve_image(self, path: str, query: str) -> None:
        params = dict(parse_qsl(query, keep_blank_values=True))
        refusal = self.demo.check_signed(path, params)
        if refusal:
            self._tos_error(403, "AccessDenied", refusal)
            return
        match = IMAGE_PATH_RE.fullmatch(path)
        assert match is not None
        stored = self.demo.stored_image(match.group(1))
        if stored is None:
            self._tos_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        faults = decode_faults(params.get("fault", ""))

        if "flaky_image" in faults:
            key = f"flaky_image:{path}?{query}"
            seen = self.demo.count(key) if self.command == "GET" else self.demo.peek_count(key)
            if seen <= int(faults["flaky_image"]):
                self._tos_error(503, "ServiceUnavailable", "Please reduce your request rate.")
                return
        signed_at = datetime.strptime(params["X-Tos-Date"], TOS_DATE_FORMAT).replace(tzinfo=UTC)
        ttl = int(params["X-Tos-Expires"])
        if int(faults.get("redirect") or 0) > 0:
            remaining = int(faults["redirect"]) - 1
            next_faults = {k: v for k, v in faults.items() if k != "redirect"}
            if remaining:
                next_faults["redirect"] = str(remaining)
            host = self.headers.get("Host") or self.demo.base_url.split("//", 1)[1]
            location = self.demo.signed_url(
                path, faults=next_faults, signed_at=signed_at, ttl=ttl, base_url=f"http://{host}"
            )
            self._send(302, b"", "text/plain", {"Location": location})
            return
        if "redirect_loopback" in faults:
            next_faults = {k: v for k, v in faults.items() if k != "redirect_loopback"}
            location = self.demo.signed_url(
                path,
                faults=next_faults,
                signed_at=signed_at,
                ttl=ttl,
                base_url=f"http://localhost:{self.demo.port}",
            )
            self._send(302, b"", "text/plain", {"Location": location})
            return

        headers = {"Cache-Control": "max-age=86400", "X-Tos-Request-Id": secrets.token_hex(8)}
        if "oversized" in faults:
            self._stream_oversized(stored, int(float(faults["oversized"]) * MiB), chunked=False)
        elif "oversized_chunked" in faults:
            self._stream_oversized(
                stored, int(float(faults["oversized_chunked"]) * MiB), chunked=True
            )
        elif "truncated" in faults:
            self.send_response(200)
            self.send_header("Content-Type", stored.content_type)
            self.send_header("Content-Length", str(len(stored.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if self.command != "HEAD":
                self.wfile.write(stored.body[: len(stored.body) // 2])
                self.wfile.flush()
        elif "slow_image" in faults:
            self.send_response(200)
            self.send_header("Content-Type", stored.content_type)
            self.send_header("Content-Length", str(len(stored.body)))
            self.end_headers()
            if self.command != "HEAD":
                self._drip(stored.body, float(faults["slow_image"]))
        else:
            self._send(200, stored.body, stored.content_type, headers)

    def _drip(self, body: bytes, seconds: float) -> None:
        pieces = 20
        step = max(1, math.ceil(len(body) / pieces))
        for offset in range(0, len(body), step):
            self.wfile.write(body[offset : offset + step])
            self.wfile.flush()
            if offset + step < len(body):
                time.sleep(seconds / pieces)

    def _stream_oversized(self, stored: StoredImage, total: int, *, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        if self.command == "HEAD":
            return
        # A real image start (so that sniffing says JPEG), then padding up to the size.
        head = stored.body[:total]
        padding = b"\0" * (256 * 1024)
        sent = 0
        while sent < total:
            piece = head if sent == 0 and head else padding[: total - sent]
            if chunked:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            sent += len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
