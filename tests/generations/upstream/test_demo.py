"""The demo upstream: Ark's shapes, signed expiring URLs, and every fault switch."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from django.core.management import CommandError, call_command
from PIL import Image

from generations.upstream.ark import ArkClient, UpstreamError, UpstreamImage, external_url_expiry
from generations.upstream.demo.server import DemoUpstream

REPO_ROOT = Path(__file__).resolve().parents[3]
MiB = 1024 * 1024


def generate_body(demo: DemoUpstream, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(
        demo.api_base_url + "/images/generations",
        json=body,
        headers={"Authorization": "Bearer demo", **headers},
        timeout=10,
    )


def image_url(demo: DemoUpstream, prompt: str, *, size: str = "128x128", **extra: Any) -> str:
    """The URL of one image of a demo model, which takes any size (Ark's models do not)."""
    response = generate_body(demo, {"model": "demo-x", "prompt": prompt, "size": size, **extra})
    assert response.status_code == 200, response.text
    return response.json()["data"][0]["url"]


def raw_get(url: str, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes, bool]:
    """Status, the bytes actually received, and whether the body ended early."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request(method, f"{parts.path}?{parts.query}")
    response = connection.getresponse()
    try:
        return response, response.read(), False
    except http.client.IncompleteRead as exc:
        return response, exc.partial, True
    finally:
        connection.close()


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- Ark's request and response shapes ---------------------------------------------------------


def test_answers_in_arks_shape_with_usage(demo_upstream: DemoUpstream, unique_prompt: Any) -> None:
    response = generate_body(
        demo_upstream,
        {
            "model": "doubao-seedream-4-0-250828",
            "prompt": unique_prompt(),
            "size": "1600x600",
            "sequential_image_generation": "auto",
            "sequential_image_generation_options": {"max_images": 2},
        },
    )

    assert response.status_code == 200
    payload = response.json()
    assert payload["model"] == "doubao-seedream-4-0-250828"
    assert abs(payload["created"] - time.time()) < 60
    assert [item["size"] for item in payload["data"]] == ["1600x600", "1600x600"]
    assert payload["usage"]["generated_images"] == 2
    assert payload["usage"]["output_tokens"] == 2 * 1600 * 600 // 256
    assert payload["usage"]["total_tokens"] == payload["usage"]["output_tokens"]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1K", (1024, 1024)),
        ("adaptive", (2048, 2048)),
        ("9000x100", (4096, 100)),
        ("64X48", (64, 48)),
    ],
)
def test_sizes_follow_ark(
    demo_upstream: DemoUpstream, size: str, expected: tuple[int, int]
) -> None:
    url = image_url(demo_upstream, "a size test", size=size)

    assert Image.open(io.BytesIO(requests.get(url, timeout=10).content)).size == expected


def test_the_same_prompt_and_seed_give_the_same_picture(demo_upstream: DemoUpstream) -> None:
    def picture(seed: int) -> bytes:
        return requests.get(image_url(demo_upstream, "a red fox", seed=seed), timeout=5).content

    assert picture(7) == picture(7)
    assert picture(7) != picture(8)


def test_refuses_a_request_without_a_bearer_key(demo_upstream: DemoUpstream) -> None:
    response = requests.post(
        demo_upstream.api_base_url + "/images/generations",
        json={"model": "doubao-seedream-4-0-250828", "prompt": "a cat"},
        timeout=5,
    )

    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "param", "type"}
    assert response.json()["error"]["code"] == "AuthenticationError"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "doubao-seedream-4-0-250828"}, 400, "MissingParameter"),
        ({"model": "doubao-seedream-4-0-250828", "prompt": "   "}, 400, "InvalidParameter"),
        ({"model": "dall-e-3", "prompt": "a cat"}, 404, "InvalidEndpointOrModel.NotFound"),
        ({"model": "demo-x", "prompt": "a cat", "size": "huge"}, 400, "InvalidParameter"),
        ({"model": "demo-x", "prompt": "a cat [demo:nonsense]"}, 400, "InvalidParameter"),
        ({"model": "demo-x", "prompt": "a cat [demo:slow=soon]"}, 400, "InvalidParameter"),
        ({"model": "demo-x", "prompt": "[demo:status=200]"}, 400, "InvalidParameter"),
        ({"model": "demo-x", "prompt": "[demo:status=503]"}, 503, "ServiceUnavailable"),
        ({"model": "demo-x", "prompt": "[demo:status=500]"}, 500, "InternalServiceError"),
    ],
)
def test_bad_requests_get_arks_errors(
    demo_upstream: DemoUpstream, body: dict[str, Any], status: int, code: str
) -> None:
    response = generate_body(demo_upstream, body)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


SEEDREAM_5_LITE = "doubao-seedream-5-0-260128"
SEEDREAM_45 = "doubao-seedream-4-5-251128"
SEEDREAM_4 = "doubao-seedream-4-0-250828"
SEEDREAM_3 = "doubao-seedream-3-0-t2i-250415"
SEEDEDIT_3 = "doubao-seededit-3-0-i2i-250628"


@pytest.mark.parametrize(
    ("model", "size", "why"),
    [
        (SEEDREAM_4, "512x512", "image size must be at least 921600 pixels"),
        (SEEDREAM_4, "adaptive", "adaptive is not supported by this model"),
        (
            SEEDREAM_4,
            "16000x500",
            "image aspect ratio (width / height) must be between 1/16 and 16",
        ),
        (SEEDREAM_4, "4097x4096", "image size must be at most 16777216 pixels"),
        (SEEDREAM_45, "1K", "1K is not supported by this model"),
        (SEEDREAM_45, "1920x1080", "image size must be at least 3686400 pixels"),
        (SEEDREAM_45, "adaptive", "adaptive is not supported by this model"),
        (SEEDREAM_5_LITE, "1K", "1K is not supported by this model"),
        (SEEDREAM_3, "2K", "2K is not supported by this model"),
        (SEEDREAM_3, "2304x1728", "image width and height must be between 512 and 2048 pixels"),
        (SEEDEDIT_3, "1024x1024", "only adaptive is supported by this model"),
    ],
)
def test_ark_models_refuse_the_sizes_ark_refuses_with_its_error(
    demo_upstream: DemoUpstream, model: str, size: str, why: str
) -> None:
    before = demo_upstream.stats()["storedImages"]
    response = generate_body(demo_upstream, {"model": model, "prompt": "a fox", "size": size})

    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"code", "message", "param", "type"}
    assert error["code"] == "InvalidParameter"
    assert error["message"].startswith(
        f"The parameter `size` specified in the request is not valid: {why}. Request id: "
    )
    assert demo_upstream.stats()["storedImages"] == before


@pytest.mark.parametrize(
    ("model", "size"),
    [
        (SEEDREAM_4, "1K"),
        (SEEDREAM_4, "1280x720"),
        (SEEDREAM_4, "4704x3520"),  # a 4K preset, with a side over 4096
        (SEEDREAM_45, "2K"),
        (SEEDREAM_45, "2560x1440"),
        (SEEDREAM_5_LITE, "3K"),
        ("doubao-seedream-5-0-lite-260128", "2K"),
        (SEEDREAM_3, "512x2048"),
        (SEEDEDIT_3, "adaptive"),
        ("ep-20250811010554-qn4cd", "64x64"),  # an endpoint: its model is not known here
    ],
)
def test_ark_models_and_endpoints_take_their_sizes(
    demo_upstream: DemoUpstream, model: str, size: str
) -> None:
    response = generate_body(demo_upstream, {"model": model, "prompt": "a fox", "size": size})

    assert response.status_code == 200, response.text
    assert response.json()["model"] == model


def test_a_size_left_out_or_null_is_the_models_default(demo_upstream: DemoUpstream) -> None:
    # The official SDK sends every argument it was not given as null.
    response = generate_body(demo_upstream, {"model": SEEDREAM_45, "prompt": "a", "size": None})

    assert response.status_code == 200, response.text


@pytest.mark.django_db
def test_the_demo_keeps_the_rules_genvault_keeps_in_the_same_shape() -> None:
    from generations.models import ImageModel
    from generations.sizes import SizeRules
    from generations.upstream.demo.server import MODEL_SIZE_RULES

    seeded = ImageModel.objects.filter(upstream_model_id__startswith="doubao-")
    assert seeded.count() == 5
    for model in seeded:
        assert SizeRules.from_dict(MODEL_SIZE_RULES[model.upstream_model_id]) == model.size_rules


@pytest.mark.parametrize(
    ("code", "status", "error_type"),
    [
        ("QuotaExceeded", 429, "TooManyRequests"),
        ("SetLimitExceeded", 429, "TooManyRequests"),
        ("ModelAccountIpmRateLimitExceeded", 429, "TooManyRequests"),
        ("ServerOverloaded", 429, "TooManyRequests"),
        ("AccountOverdueError", 403, "Forbidden"),
        ("AccessDenied", 403, "Forbidden"),
        ("ModelNotOpen", 404, "NotFound"),
        ("InputTextSensitiveContentDetected", 400, "BadRequest"),
        ("SomethingArkNeverSaid", 400, "BadRequest"),
    ],
)
def test_arks_codes_come_with_arks_statuses(
    demo_upstream: DemoUpstream, code: str, status: int, error_type: str
) -> None:
    body = {"model": "demo-x", "prompt": f"a cat [demo:error={code}]"}
    response = generate_body(demo_upstream, body)

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, error_type)
    assert "Retry-After" not in response.headers  # Ark documents none


def test_a_rate_limit_may_say_when_to_come_back(
    demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    prompt = unique_prompt("[demo:status=429] [demo:retry_after=7]")
    response = generate_body(demo_upstream, {"model": "demo-x", "prompt": prompt})

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RateLimitExceeded.EndpointRPMExceeded"
    assert response.headers["Retry-After"] == "7"


def test_flaky_answers_the_error_asked_for_then_recovers(
    demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    body = {
        "model": "demo-x",
        "prompt": unique_prompt("[demo:flaky=2] [demo:error=ModelAccountIpmRateLimitExceeded]"),
        "size": "64x64",
    }
    answers = [generate_body(demo_upstream, body) for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].json()["error"]["code"] == "ModelAccountIpmRateLimitExceeded"


def test_a_prompt_of_null_is_missing(demo_upstream: DemoUpstream) -> None:
    """The official SDK sends null for every argument it was not given."""
    response = generate_body(demo_upstream, {"model": "demo-x", "prompt": None})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "MissingParameter"
    assert response.json()["error"]["param"] == "prompt"


def test_b64_json_answers_carry_the_bytes(demo_upstream: DemoUpstream) -> None:
    response = generate_body(
        demo_upstream,
        {"model": "demo-x", "prompt": "a cat", "size": "64x64", "response_format": "b64_json"},
    )

    import base64

    item = response.json()["data"][0]
    assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (64, 64)


@pytest.mark.parametrize(
    ("marker", "pillow_format", "content_type"),
    [("png", "PNG", "image/png"), ("webp", "WEBP", "image/webp")],
)
def test_other_formats(
    demo_upstream: DemoUpstream, marker: str, pillow_format: str, content_type: str
) -> None:
    url = image_url(demo_upstream, f"a cat [demo:{marker}]")
    response = requests.get(url, timeout=5)

    assert response.headers["Content-Type"] == content_type
    assert Image.open(io.BytesIO(response.content)).format == pillow_format
    assert urlsplit(url).path.endswith(f".{marker}")


def test_markers_combine_and_slow_waits(demo_upstream: DemoUpstream, unique_prompt: Any) -> None:
    started = time.monotonic()
    url = image_url(demo_upstream, unique_prompt("[demo:slow=0.4] a cat [demo:png]"))

    assert time.monotonic() - started >= 0.4
    assert urlsplit(url).path.endswith(".png")


# -- signed URLs --------------------------------------------------------------------------------


def test_urls_answer_403_once_expired() -> None:
    with DemoUpstream(port=0, url_ttl=2, extra_loopback_listeners=False) as demo:
        url = image_url(demo, "short lived")
        expires_at = external_url_expiry(url)
        assert expires_at is not None
        assert requests.get(url, timeout=5).status_code == 200

        time.sleep(max(0.0, expires_at.timestamp() - time.time()) + 0.05)
        response = requests.get(url, timeout=5)

    assert response.status_code == 403
    assert response.json()["Error"]["Code"] == "AccessDenied"
    assert "expired" in response.json()["Error"]["Message"]


def test_the_expired_fault_gives_a_dead_url(demo_upstream: DemoUpstream) -> None:
    url = image_url(demo_upstream, "old news [demo:expired]")

    expires_at = external_url_expiry(url)
    assert expires_at is not None
    assert expires_at.timestamp() < time.time()
    response = requests.get(url, timeout=5)
    assert response.status_code == 403
    assert response.json()["Error"]["Code"] == "AccessDenied"


def test_an_expired_url_answers_what_tos_answers(demo_upstream: DemoUpstream) -> None:
    """TOS's error code overview: a JSON ``Error`` holding Code, RequestId, HostId, Message
    and EC, with the request id and the EC in headers as well."""
    url = image_url(demo_upstream, "old news [demo:expired]")

    response = requests.get(url, timeout=5)

    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["Error"]
    assert set(error) == {"Code", "RequestId", "HostId", "Message", "EC"}
    assert (error["Code"], error["Message"]) == ("AccessDenied", "Request has expired.")
    assert error["HostId"] == urlsplit(url).netloc
    assert response.headers["x-tos-request-id"] == error["RequestId"]
    assert response.headers["x-tos-ec"] == error["EC"]


def test_a_tampered_url_is_refused(demo_upstream: DemoUpstream) -> None:
    url = image_url(demo_upstream, "signed [demo:truncated]")
    signature = dict(parse_qsl(urlsplit(url).query))["X-Tos-Signature"]
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]

    for bad_url in (
        with_query(url, **{"X-Tos-Signature": forged}),
        with_query(url, **{"X-Tos-Signature": None}),
        with_query(url, **{"X-Tos-Expires": "999999999"}),
        with_query(url, fault=None),  # the fault is signed too
    ):
        response = requests.get(bad_url, timeout=5)
        assert response.status_code == 403, bad_url
        assert response.json()["Error"]["Code"] == "AccessDenied"


def test_an_unknown_image_is_404(demo_upstream: DemoUpstream) -> None:
    url = demo_upstream.signed_url("/images/" + "0" * 32 + ".jpeg", faults={})

    assert requests.get(url, timeout=5).status_code == 404


def test_head_gives_the_headers_without_the_body(demo_upstream: DemoUpstream) -> None:
    url = image_url(demo_upstream, "a head")
    full = requests.get(url, timeout=5)
    response, body, _ = raw_get(url, "HEAD")

    assert response.status == 200
    assert response.getheader("Content-Type") == "image/jpeg"
    assert int(response.getheader("Content-Length")) == len(full.content)
    assert body == b""


# -- image-serving faults ------------------------------------------------------------------------


def test_truncated_sends_half_of_what_it_declares(demo_upstream: DemoUpstream) -> None:
    response, received, ended_early = raw_get(image_url(demo_upstream, "cut [demo:truncated]"))

    declared = int(response.getheader("Content-Length"))
    assert ended_early
    assert 0 < len(received) == declared // 2


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_streams_that_many_megabytes(demo_upstream: DemoUpstream, chunked: bool) -> None:
    marker = "oversized_chunked" if chunked else "oversized"
    response = requests.get(
        image_url(demo_upstream, f"big [demo:{marker}=3]"), stream=True, timeout=10
    )
    received = b"".join(response.iter_content(256 * 1024))

    assert len(received) == 3 * MiB
    assert received[:2] == b"\xff\xd8"  # starts as a JPEG, so sniffing alone does not catch it
    if chunked:
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
    else:
        assert response.headers["Content-Length"] == str(3 * MiB)


def test_html_and_svg_are_not_images(demo_upstream: DemoUpstream) -> None:
    html = requests.get(image_url(demo_upstream, "[demo:html]"), timeout=5)
    svg = requests.get(image_url(demo_upstream, "[demo:svg]"), timeout=5)

    assert html.headers["Content-Type"].startswith("text/html")
    assert b"<html" in html.content
    assert svg.headers["Content-Type"] == "image/svg+xml"
    assert b"<script" in svg.content
    for body in (html.content, svg.content):
        with pytest.raises(Image.UnidentifiedImageError):
            Image.open(io.BytesIO(body))


def test_declared_types_can_lie(demo_upstream: DemoUpstream) -> None:
    wrong = requests.get(image_url(demo_upstream, "[demo:wrong_type]"), timeout=5)
    text = requests.get(image_url(demo_upstream, "[demo:text_type]"), timeout=5)

    assert wrong.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(wrong.content)).format == "PNG"
    assert text.headers["Content-Type"] == "text/plain"
    assert Image.open(io.BytesIO(text.content)).format == "JPEG"


def test_flaky_image_fails_the_first_gets(demo_upstream: DemoUpstream, unique_prompt: Any) -> None:
    url = image_url(demo_upstream, unique_prompt("[demo:flaky_image=2]"))

    statuses = [requests.get(url, timeout=5).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]


def test_slow_image_drips_the_body(demo_upstream: DemoUpstream) -> None:
    url = image_url(demo_upstream, "[demo:slow_image=0.8]")
    started = time.monotonic()
    response = requests.get(url, stream=True, timeout=5)
    headers_after = time.monotonic() - started
    body = response.content
    total = time.monotonic() - started

    assert headers_after < 0.4
    assert total >= 0.7
    assert Image.open(io.BytesIO(body)).format == "JPEG"


def test_bomb_is_small_but_claims_900_megapixels(demo_upstream: DemoUpstream) -> None:
    body = requests.get(image_url(demo_upstream, "[demo:bomb]"), timeout=10).content

    assert len(body) < 200_000
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", body[16:24])
    assert (width, height) == (30_000, 30_000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(body))


def test_redirect_loopback_points_at_localhost(demo_upstream: DemoUpstream) -> None:
    url = image_url(demo_upstream, "[demo:redirect_loopback]")
    first = requests.get(url, allow_redirects=False, timeout=5)

    assert first.status_code == 302
    location = urlsplit(first.headers["Location"])
    assert location.netloc == f"localhost:{demo_upstream.port}"
    followed = requests.get(first.headers["Location"], allow_redirects=False, timeout=5)
    assert followed.status_code == 200
    assert Image.open(io.BytesIO(followed.content)).format == "JPEG"


def test_redirect_chains_have_the_length_asked(demo_upstream: DemoUpstream) -> None:
    url = image_url(demo_upstream, "[demo:redirect=3]")

    response = requests.get(url, timeout=5)
    assert [hop.status_code for hop in response.history] == [302, 302, 302]
    assert response.status_code == 200
    session = requests.Session()
    session.max_redirects = 2
    with pytest.raises(requests.TooManyRedirects):
        session.get(url, timeout=5)


@pytest.mark.parametrize(
    "form", ["127.0.0.2", "[::1]", "2130706433", "[::ffff:127.0.0.1]", "localhost"]
)
def test_other_loopback_spellings_still_reach_the_image(
    demo_upstream: DemoUpstream, form: str
) -> None:
    url = image_url(demo_upstream, f"[demo:host={form}]")

    assert urlsplit(url).netloc == f"{form}:{demo_upstream.port}"
    if form == "[::1]" and "::1" not in demo_upstream.listening_on:
        pytest.skip("this machine cannot listen on ::1")
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).format == "JPEG"


def test_big_is_a_real_jpeg_of_about_that_size(demo_upstream: DemoUpstream) -> None:
    first = requests.get(image_url(demo_upstream, "[demo:big=3]"), timeout=10).content
    started = time.monotonic()
    second = requests.get(image_url(demo_upstream, "again [demo:big=3]"), timeout=10).content

    assert 0.8 * 3 * MiB < len(first) < 1.2 * 3 * MiB
    assert Image.open(io.BytesIO(first)).format == "JPEG"
    assert second == first  # made once per size, then cached
    assert time.monotonic() - started < 1


# -- the request log ------------------------------------------------------------------------------


def test_request_log_over_http(demo_upstream: DemoUpstream) -> None:
    url = image_url(demo_upstream, "logged")
    requests.get(url, timeout=5)

    log = requests.get(demo_upstream.base_url + "/_demo/requests", timeout=5).json()
    assert [entry["method"] for entry in log] == ["POST", "GET"]
    assert log[0]["json"]["prompt"] == "logged"
    assert log[1]["path"] == url.split(str(demo_upstream.port), 1)[1]
    assert log[1]["host"] == f"127.0.0.1:{demo_upstream.port}"
    assert "Authorization" not in log[1]["headers"]

    assert requests.delete(demo_upstream.base_url + "/_demo/requests", timeout=5).status_code == 204
    assert requests.get(demo_upstream.base_url + "/_demo/requests", timeout=5).json() == []


def test_a_real_key_is_never_kept_in_the_log(demo_upstream: DemoUpstream) -> None:
    generate_body(
        demo_upstream,
        {"model": "demo-x", "prompt": "x", "size": "16x16"},
        Authorization="Bearer sk-real",
    )

    assert demo_upstream.request_log[0]["headers"]["Authorization"] == "Bearer <redacted>"
    assert "sk-real" not in json.dumps(demo_upstream.request_log)


# -- the management command ------------------------------------------------------------------------


def test_the_command_serves_until_interrupted(settings: Any) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "demo_upstream", "--port", "0", "--url-ttl", "60"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "Demo upstream serving on http://127.0.0.1:" in line, process.stderr.read()
        base_url = line.split("serving on ", 1)[1].split()[0]
        settings.IMAGE_FETCH_ALLOWED_HOSTS = [base_url.split("://", 1)[1]]
        client = ArkClient(
            base_url=base_url + "/api/v3",
            api_key="demo",
            connect_timeout=2,
            read_timeout=10,
            max_retries=0,
        )
        items = client.generate(
            model_id="doubao-seedream-4-0-250828",
            prompt="from the command",
            size="1K",
            params={},
            image=None,
            capabilities=set(),
        )
        assert isinstance(items[0], UpstreamImage)
        assert items[0].expires_at is not None
        assert items[0].expires_at.timestamp() - time.time() < 61
        assert requests.get(items[0].url, timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "Stopped." in out
    assert "Traceback" not in err


def test_the_command_refuses_a_bad_ttl() -> None:
    with pytest.raises(CommandError, match="--url-ttl"):
        call_command("demo_upstream", "--url-ttl", "0")


def test_the_command_says_when_the_port_is_taken(demo_upstream: DemoUpstream) -> None:
    with pytest.raises(CommandError, match="Cannot listen"):
        call_command("demo_upstream", "--port", str(demo_upstream.port))


def test_item_errors_and_images_together_through_the_client(
    demo_upstream: DemoUpstream, settings: Any
) -> None:
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [demo_upstream.base_url.split("://", 1)[1]]
    client = ArkClient(
        base_url=demo_upstream.api_base_url,
        api_key="demo",
        connect_timeout=2,
        read_timeout=10,
        max_retries=0,
    )
    items = client.generate(
        model_id="doubao-seedream-4-0-250828",
        prompt="[demo:item_error] two frames",
        size="1K",
        params={"max_images": 2},
        image=None,
        capabilities={"sequential"},
    )

    assert isinstance(items[0], UpstreamError)
    assert isinstance(items[1], UpstreamImage)


# -- streaming and groups -----------------------------------------------------------------------


def stream_events(response: requests.Response) -> list[tuple[str, Any]]:
    """(event name, decoded data) of a server-sent event stream, in order."""
    events: list[tuple[str, Any]] = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            data = fields["data"]
            events.append((fields.get("event", ""), data if data == "[DONE]" else json.loads(data)))
    return events


def group_body(prompt: str, max_images: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "doubao-seedream-4-5-251128",
        "prompt": prompt,
        "size": "2560x1440",
        "sequential_image_generation": "auto",
        "sequential_image_generation_options": {"max_images": max_images},
        **extra,
    }


def test_a_streamed_group_is_arks_events_one_image_each_then_usage(
    demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    response = generate_body(demo_upstream, group_body(unique_prompt(), 3, stream=True))

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    events = stream_events(response)
    names = [name for name, _ in events]
    assert names == [
        "image_generation.partial_succeeded",
        "image_generation.partial_succeeded",
        "image_generation.partial_succeeded",
        "image_generation.completed",
        "",
    ]
    images = [data for _, data in events[:3]]
    assert [image["image_index"] for image in images] == [0, 1, 2]
    assert all(image["type"] == "image_generation.partial_succeeded" for image in images)
    assert all(image["model"] == "doubao-seedream-4-5-251128" for image in images)
    assert all(requests.get(image["url"], timeout=5).status_code == 200 for image in images)
    completed = events[3][1]
    assert completed["usage"] == {
        "generated_images": 3,
        "output_tokens": 3 * 2560 * 1440 // 256,
        "total_tokens": 3 * 2560 * 1440 // 256,
    }
    assert events[4][1] == "[DONE]"


def test_a_failed_image_in_a_stream_is_a_partial_failed_event(
    demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    body = group_body(unique_prompt("[demo:item_error]"), 2, stream=True)
    events = stream_events(generate_body(demo_upstream, body))

    failed = events[0][1]
    assert failed["type"] == "image_generation.partial_failed"
    assert failed["image_index"] == 0
    assert failed["error"]["code"] == "OutputImageSensitiveContentDetected"
    assert events[1][1]["type"] == "image_generation.partial_succeeded"
    assert events[2][1]["usage"]["generated_images"] == 1


def test_a_streamed_b64_json_event_carries_the_image(
    demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    import base64

    body = group_body(unique_prompt(), 1, stream=True, response_format="b64_json")
    image = stream_events(generate_body(demo_upstream, body))[0][1]

    assert "url" not in image
    assert Image.open(io.BytesIO(base64.b64decode(image["b64_json"]))).size == (2560, 1440)


def test_latency_spaces_the_events_of_a_stream(
    demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    body = group_body(unique_prompt("[demo:latency=0.3]"), 3, stream=True)
    arrivals = []
    started = time.monotonic()
    with requests.post(
        demo_upstream.api_base_url + "/images/generations",
        json=body,
        headers={"Authorization": "Bearer demo"},
        stream=True,
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith(b"event: image_generation.partial_succeeded"):
                arrivals.append(time.monotonic() - started)

    assert len(arrivals) == 3
    assert arrivals[2] - arrivals[0] >= 0.6  # each image takes its own time


@pytest.mark.parametrize(
    ("prompt", "max_images", "references", "made"),
    [
        ("a group", 4, 0, 4),
        ("a group [demo:images=2]", 10, 0, 2),  # the model decides; max_images is a ceiling
        ("a group [demo:images=9]", 3, 0, 3),
        ("a group", 15, 1, 14),  # references and images made stay within 15
        ("a group", 5, 13, 2),
    ],
)
def test_max_images_is_a_ceiling(
    demo_upstream: DemoUpstream,
    unique_prompt: Any,
    prompt: str,
    max_images: int,
    references: int,
    made: int,
) -> None:
    extra: dict[str, Any] = {}
    if references:
        extra["image"] = [f"https://example.com/{n}.png" for n in range(references)]
    response = generate_body(demo_upstream, group_body(unique_prompt(prompt), max_images, **extra))

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == made
    assert response.json()["usage"]["generated_images"] == made


def test_a_group_without_max_images_may_make_fifteen(demo_upstream: DemoUpstream) -> None:
    body = group_body("a big group", 1)
    body["sequential_image_generation_options"] = None  # as the SDK sends it when not given

    assert len(generate_body(demo_upstream, body).json()["data"]) == 15


def test_more_than_14_references_are_refused(demo_upstream: DemoUpstream) -> None:
    body = group_body("a group", 1, image=[f"https://example.com/{n}.png" for n in range(15)])
    response = generate_body(demo_upstream, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidParameter"


# -- a client we did not write: Volcengine's own SDK ------------------------------------------


@pytest.fixture
def sdk(demo_upstream: DemoUpstream) -> Any:
    """Volcengine's runtime SDK pointed at the demo upstream, without silent retries."""
    from volcenginesdkarkruntime import Ark

    return Ark(base_url=demo_upstream.api_base_url, api_key="demo", max_retries=0, timeout=30)


def sdk_group(max_images: int) -> Any:
    from volcenginesdkarkruntime.types.images.images import SequentialImageGenerationOptions

    return SequentialImageGenerationOptions(max_images=max_images)


def test_the_sdk_reads_a_plain_answer(sdk: Any, unique_prompt: Any) -> None:
    answer = sdk.images.generate(
        model="doubao-seedream-4-0-250828",
        prompt=unique_prompt(),
        size="1440x960",
        response_format="url",
        watermark=False,
    )

    (image,) = answer.data
    assert image.size == "1440x960"
    assert Image.open(io.BytesIO(requests.get(image.url, timeout=5).content)).size == (1440, 960)
    assert answer.usage.generated_images == 1
    assert answer.model == "doubao-seedream-4-0-250828"
    assert answer.model_extra["created"] > 0  # the SDK keeps Ark's "created" as an extra


def test_the_sdk_reads_a_b64_json_answer(sdk: Any, unique_prompt: Any) -> None:
    import base64

    answer = sdk.images.generate(
        model="doubao-seedream-4-0-250828",
        prompt=unique_prompt(),
        size="1280x720",
        response_format="b64_json",
    )

    (image,) = answer.data
    assert Image.open(io.BytesIO(base64.b64decode(image.b64_json))).size == (1280, 720)


def test_the_sdk_reads_a_group(sdk: Any, unique_prompt: Any) -> None:
    answer = sdk.images.generate(
        model="doubao-seedream-4-5-251128",
        prompt=unique_prompt("three foxes"),
        size="2560x1440",
        sequential_image_generation="auto",
        sequential_image_generation_options=sdk_group(3),
    )

    assert len({image.url for image in answer.data}) == 3
    assert answer.usage.generated_images == 3


def test_the_sdk_reads_a_streamed_group(sdk: Any, unique_prompt: Any) -> None:
    events = list(
        sdk.images.generate(
            model="doubao-seedream-4-5-251128",
            prompt=unique_prompt("three foxes, streamed"),
            size="2560x1440",
            sequential_image_generation="auto",
            sequential_image_generation_options=sdk_group(3),
            stream=True,
        )
    )

    assert [event.type for event in events] == [
        "image_generation.partial_succeeded",
        "image_generation.partial_succeeded",
        "image_generation.partial_succeeded",
        "image_generation.completed",
    ]
    assert [event.image_index for event in events[:3]] == [0, 1, 2]
    assert all(requests.get(event.url, timeout=5).status_code == 200 for event in events[:3])
    # The SDK types every event as a generating one, so `completed`'s usage stays a dict.
    usage = events[3].usage
    assert (usage["generated_images"] if isinstance(usage, dict) else usage.generated_images) == 3


@pytest.mark.parametrize(
    ("prompt", "exception", "status", "code"),
    [
        ("[demo:error=QuotaExceeded]", "ArkRateLimitError", 429, "QuotaExceeded"),
        ("[demo:status=429]", "ArkRateLimitError", 429, "RateLimitExceeded.EndpointRPMExceeded"),
        ("[demo:error=AccessDenied]", "ArkPermissionDeniedError", 403, "AccessDenied"),
        (
            "[demo:error=InputTextSensitiveContentDetected]",
            "ArkBadRequestError",
            400,
            "InputTextSensitiveContentDetected",
        ),
        ("[demo:status=500]", "ArkInternalServerError", 500, "InternalServiceError"),
    ],
)
def test_the_sdk_reads_arks_errors(
    sdk: Any, unique_prompt: Any, prompt: str, exception: str, status: int, code: str
) -> None:
    from volcenginesdkarkruntime import _exceptions

    with pytest.raises(getattr(_exceptions, exception)) as raised:
        sdk.images.generate(model="doubao-seedream-4-0-250828", prompt=unique_prompt(prompt))

    assert raised.value.status_code == status
    assert raised.value.code == code


def test_the_sdks_nulls_mean_not_given(sdk: Any, demo_upstream: DemoUpstream) -> None:
    """The SDK sends null for every argument it was not given: Ark's defaults apply."""
    answer = sdk.images.generate(model="doubao-seedream-4-0-250828", prompt="a fox")

    (sent,) = [e["json"] for e in demo_upstream.request_log if e["method"] == "POST"]
    assert sent["size"] is None and sent["watermark"] is None and sent["image"] is None
    assert answer.data[0].size == "2048x2048"  # Seedream 4.0's default


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        (
            SEEDREAM_45,
            {"optimize_prompt_options": {"mode": "fast"}},
            "optimize_prompt_options.mode",
        ),
        (
            SEEDREAM_5_LITE,
            {"optimize_prompt_options": {"mode": "fast"}},
            "optimize_prompt_options.mode",
        ),
        (
            SEEDREAM_3,
            {"optimize_prompt_options": {"mode": "standard"}},
            "optimize_prompt_options.mode",
        ),
        (SEEDREAM_4, {"output_format": "png"}, "output_format"),
        (SEEDREAM_5_LITE, {"output_format": "webp"}, "output_format"),
    ],
)
def test_ark_models_refuse_the_optional_parameters_they_do_not_take(
    demo_upstream: DemoUpstream, model: str, extra: dict[str, Any], param: str
) -> None:
    body = {"model": model, "prompt": "a fox", "size": "2048x2048", **extra}
    response = generate_body(demo_upstream, body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("InvalidParameter", param)
    assert error["message"].startswith(f"The parameter `{param}` specified in the request")


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        (SEEDREAM_4, {"optimize_prompt_options": {"mode": "fast"}}),
        (SEEDREAM_45, {"optimize_prompt_options": {"mode": "standard"}}),
        (
            SEEDREAM_5_LITE,
            {"optimize_prompt_options": {"mode": "standard"}, "output_format": "jpeg"},
        ),
        (SEEDREAM_4, {"optimize_prompt_options": None, "output_format": None}),  # the SDK's nulls
    ],
)
def test_ark_models_take_the_optional_parameters_they_take(
    demo_upstream: DemoUpstream, model: str, extra: dict[str, Any]
) -> None:
    body = {"model": model, "prompt": "a fox", "size": "2048x2048", **extra}
    response = generate_body(demo_upstream, body)

    assert response.status_code == 200, response.text
    image = requests.get(response.json()["data"][0]["url"], timeout=10)
    assert image.headers["Content-Type"] == "image/jpeg"


def test_output_format_png_answers_a_png(demo_upstream: DemoUpstream) -> None:
    body = {"model": SEEDREAM_5_LITE, "prompt": "a fox", "size": "2K", "output_format": "png"}
    response = generate_body(demo_upstream, body)

    assert response.status_code == 200, response.text
    image = requests.get(response.json()["data"][0]["url"], timeout=10)
    assert image.headers["Content-Type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
