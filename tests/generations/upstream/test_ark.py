"""The Ark client, against the demo upstream over real HTTP on loopback."""

from __future__ import annotations

import io
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from PIL import Image

from generations.models import ImageModel
from generations.upstream.ark import (
    ArkClient,
    UpstreamError,
    UpstreamImage,
    UpstreamInlineImage,
    UpstreamUsage,
    client_for,
    external_url_expiry,
    is_retryable,
    retry_after_seconds,
    sse_events,
)
from generations.upstream.demo.server import DemoUpstream

SEEDREAM_4 = ImageModel(
    name="Seedream 4.0",
    upstream_model_id="doubao-seedream-4-0-250828",
    max_reference_images=14,
    max_images=15,
)
SEEDREAM_3 = ImageModel(
    name="Seedream 3.0",
    upstream_model_id="doubao-seedream-3-0-t2i-250415",
    takes_seed=True,
    takes_guidance_scale=True,
)
SEEDEDIT_3 = ImageModel(
    name="SeedEdit 3.0",
    upstream_model_id="doubao-seededit-3-0-i2i-250628",
    requires_reference=True,
    max_reference_images=1,
    takes_seed=True,
    takes_guidance_scale=True,
)


@pytest.fixture(autouse=True)
def demo_image_urls_allowed(settings: Any, demo_upstream: DemoUpstream) -> None:
    """The demo upstream's image URLs are plain http from its own host: allowed, as in demo mode."""
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [demo_upstream.base_url.split("://", 1)[1]]


def generate(
    client: ArkClient,
    prompt: str,
    *,
    model: ImageModel = SEEDREAM_4,
    size: str | None = "1024x1024",  # one that Seedream 4.0 and 3.0 both take
    params: dict[str, Any] | None = None,
    image: str | list[str] | None = None,
) -> list[Any]:
    return client.generate(
        model_id=model.upstream_model_id,
        prompt=prompt,
        size=size,
        params=params or {},
        image=image,
        capabilities=model.capabilities,
    )


def posts(demo: DemoUpstream) -> list[dict[str, Any]]:
    return [entry for entry in demo.request_log if entry["method"] == "POST"]


def only_error(items: list[Any]) -> UpstreamError:
    assert len(items) == 1, items
    assert isinstance(items[0], UpstreamError), items
    return items[0]


# -- success -----------------------------------------------------------------------------


def test_generates_a_real_jpeg_of_the_size_asked(ark_client: ArkClient, unique_prompt: Any) -> None:
    before = datetime.now(UTC)
    items = generate(ark_client, unique_prompt(), size="1K")

    assert len(items) == 1
    image = items[0]
    assert isinstance(image, UpstreamImage)
    assert image.size == "1024x1024"
    response = requests.get(image.url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    decoded = Image.open(io.BytesIO(response.content))
    assert decoded.format == "JPEG"
    assert decoded.size == (1024, 1024)
    # Signed for 24 hours, as Ark's URLs are.
    assert image.expires_at is not None
    assert before + timedelta(hours=24) - timedelta(seconds=5) <= image.expires_at
    assert image.expires_at <= datetime.now(UTC) + timedelta(hours=24)


def test_honours_a_width_by_height_size(ark_client: ArkClient, unique_prompt: Any) -> None:
    image = generate(ark_client, unique_prompt(), size="1600x600")[0]

    assert image.size == "1600x600"
    decoded = Image.open(io.BytesIO(requests.get(image.url, timeout=5).content))
    assert decoded.size == (1600, 600)


def test_sequential_generation_gives_one_item_per_image(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    items = generate(ark_client, unique_prompt("a comic strip"), params={"max_images": 3})

    assert len(items) == 3
    assert all(isinstance(item, UpstreamImage) for item in items)
    assert len({item.url for item in items}) == 3
    bodies = {requests.get(item.url, timeout=5).content for item in items}
    assert len(bodies) == 3, "each image of a sequence is its own picture"


def test_b64_json_answers_come_back_as_the_image_bytes(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    items = generate(
        ark_client,
        unique_prompt(),
        size="1280x720",
        params={"response_format": "b64_json", "max_images": 2},
    )

    assert [type(item) for item in items] == [UpstreamInlineImage, UpstreamInlineImage]
    assert all(Image.open(io.BytesIO(item.data)).size == (1280, 720) for item in items)
    assert items[0].size == "1280x720"
    assert posts(demo_upstream)[0]["json"]["response_format"] == "b64_json"


def test_clients_can_be_shared_between_threads(ark_client: ArkClient, unique_prompt: Any) -> None:
    outcomes: list[list[Any]] = []

    def call() -> None:
        outcomes.append(generate(ark_client, unique_prompt()))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert len(outcomes) == 8
    assert all(isinstance(items[0], UpstreamImage) for items in outcomes)


# -- errors --------------------------------------------------------------------------------


def test_a_missing_key_is_an_authentication_error_not_retried(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    error = only_error(generate(make_ark_client(api_key=""), unique_prompt()))

    assert error.code == "AuthenticationError"
    assert "API key" in error.message
    assert len(posts(demo_upstream)) == 1


def test_an_empty_prompt_is_invalid_parameter_not_retried(
    ark_client: ArkClient, demo_upstream: DemoUpstream
) -> None:
    error = only_error(generate(ark_client, ""))

    assert error.code == "InvalidParameter"
    assert "prompt" in error.message
    assert len(posts(demo_upstream)) == 1


def test_a_sensitive_prompt_keeps_arks_code_and_message(
    ark_client: ArkClient, unique_prompt: Any
) -> None:
    prompt = unique_prompt("[demo:error=InputTextSensitiveContentDetected]")
    error = only_error(generate(ark_client, prompt))

    assert error.code == "InputTextSensitiveContentDetected"
    assert "sensitive information" in error.message


def test_an_error_item_in_a_200_answer_is_an_error(
    ark_client: ArkClient, unique_prompt: Any
) -> None:
    error = only_error(generate(ark_client, unique_prompt("[demo:item_error]")))

    assert error.code == "OutputImageSensitiveContentDetected"
    assert "output image" in error.message


def test_a_failed_item_does_not_hide_the_others(ark_client: ArkClient, unique_prompt: Any) -> None:
    items = generate(ark_client, unique_prompt("[demo:item_error]"), params={"max_images": 3})

    assert [type(item) for item in items] == [UpstreamError, UpstreamImage, UpstreamImage]
    assert items[0].code == "OutputImageSensitiveContentDetected"


def test_an_unknown_model_is_not_found(ark_client: ArkClient, unique_prompt: Any) -> None:
    unknown = ImageModel(name="x", upstream_model_id="gpt-image-1", default_params={})
    error = only_error(generate(ark_client, unique_prompt(), model=unknown))

    assert error.code == "InvalidEndpointOrModel.NotFound"
    assert "gpt-image-1" in error.message


def test_rate_limits_are_retried_a_bounded_number_of_times(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    client = make_ark_client(max_retries=2)
    error = only_error(generate(client, unique_prompt("[demo:status=429]")))

    assert error.code == "RateLimitExceeded.EndpointRPMExceeded"
    assert len(posts(demo_upstream)) == 3  # the call and two retries


def test_a_flaky_upstream_is_retried_until_it_answers(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    client = make_ark_client(max_retries=2)
    items = generate(client, unique_prompt("[demo:flaky=2]"))

    assert isinstance(items[0], UpstreamImage)
    assert requests.get(items[0].url, timeout=5).status_code == 200
    assert len(posts(demo_upstream)) == 3


def test_retries_stop_at_the_limit(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    client = make_ark_client(max_retries=1)
    error = only_error(generate(client, unique_prompt("[demo:flaky=5]")))

    assert error.code == "InternalServiceError"
    assert len(posts(demo_upstream)) == 2


def test_a_slow_upstream_times_out_without_a_second_billed_call(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    client = make_ark_client(read_timeout=0.3, max_retries=2)
    started = time.monotonic()
    error = only_error(generate(client, unique_prompt("[demo:slow=1.5]")))

    assert error.code == "UpstreamTimeout"
    assert time.monotonic() - started < 1.2
    # The request reached Ark and may still be generating (and billed): not sent again.
    assert len(posts(demo_upstream)) == 1


def test_a_closed_port_is_a_connection_error(unique_prompt: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = ArkClient(
        base_url=f"http://127.0.0.1:{closed_port}/api/v3",
        api_key="demo",
        connect_timeout=1,
        read_timeout=1,
        max_retries=1,
        retry_backoff=0.01,
    )

    error = only_error(generate(client, unique_prompt()))

    assert error.code == "UpstreamConnectionError"
    assert str(closed_port) in error.message


def test_a_non_ark_error_page_is_reported_with_its_status(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    client = make_ark_client(base_url=demo_upstream.base_url + "/no-such-api", max_retries=0)
    error = only_error(generate(client, unique_prompt()))

    assert error.code == "NotFound"


# -- what Ark receives -----------------------------------------------------------------------


def test_seed_and_guidance_scale_go_only_to_models_that_take_them(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    params = {"seed": 42, "guidance_scale": 3.5, "watermark": False}
    generate(ark_client, unique_prompt(), model=SEEDREAM_3, params=params)
    generate(ark_client, unique_prompt(), model=SEEDREAM_4, params=params)

    seedream_3, seedream_4 = (entry["json"] for entry in posts(demo_upstream))
    assert seedream_3["model"] == "doubao-seedream-3-0-t2i-250415"
    assert seedream_3["seed"] == 42
    assert seedream_3["guidance_scale"] == 3.5
    assert seedream_3["watermark"] is False
    assert "seed" not in seedream_4
    assert "guidance_scale" not in seedream_4
    assert seedream_4["watermark"] is False


def test_the_body_is_arks_shape_with_watermark_on_by_default(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    prompt = unique_prompt()
    generate(ark_client, prompt, size="2K")

    entry = posts(demo_upstream)[0]
    assert entry["path"] == "/api/v3/images/generations"
    assert entry["headers"]["Authorization"] == "Bearer demo"
    assert entry["json"] == {
        "model": "doubao-seedream-4-0-250828",
        "prompt": prompt,
        "response_format": "url",
        "watermark": True,
        "size": "2K",
    }


@pytest.mark.parametrize(
    ("given", "sent"), [("false", False), ("0", False), ("true", True), (0, False)]
)
def test_watermark_from_a_form_or_json(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any, given: Any, sent: bool
) -> None:
    generate(ark_client, unique_prompt(), params={"watermark": given})

    assert posts(demo_upstream)[0]["json"]["watermark"] is sent


def test_bad_params_are_an_error_not_a_crash(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    error = only_error(
        generate(ark_client, unique_prompt(), model=SEEDREAM_3, params={"seed": "x"})
    )

    assert error.code == "InvalidParameter"
    assert posts(demo_upstream) == []


def test_no_size_lets_the_model_choose(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    image = generate(ark_client, unique_prompt(), size=None)[0]

    assert "size" not in posts(demo_upstream)[0]["json"]
    assert image.size == "2048x2048"  # Seedream 4.0's default


def test_the_reference_image_goes_only_to_image_to_image_models(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    references = ["https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo="]
    generate(ark_client, unique_prompt(), model=SEEDEDIT_3, size="adaptive", image=references)
    generate(ark_client, unique_prompt(), model=SEEDREAM_4, image=references[0])
    generate(ark_client, unique_prompt(), model=SEEDREAM_3, image=references[0])

    seededit, seedream_4, seedream_3 = (entry["json"] for entry in posts(demo_upstream))
    assert seededit["image"] == references
    assert seedream_4["image"] == references[0]
    assert "image" not in seedream_3
    # The demo upstream never fetches a reference image: only the POSTs reached it.
    assert all(entry["method"] == "POST" for entry in demo_upstream.request_log)


def test_sequential_options_only_for_sequential_models_and_several_images(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    generate(ark_client, unique_prompt(), model=SEEDREAM_4, params={"max_images": 2})
    generate(ark_client, unique_prompt(), model=SEEDREAM_4, params={"max_images": 1})
    items = generate(ark_client, unique_prompt(), model=SEEDREAM_3, params={"max_images": 4})

    sequence, single, not_sequential = (entry["json"] for entry in posts(demo_upstream))
    assert sequence["sequential_image_generation"] == "auto"
    assert sequence["sequential_image_generation_options"] == {"max_images": 2}
    assert "sequential_image_generation" not in single
    assert "sequential_image_generation" not in not_sequential
    assert len(items) == 1
    assert "n" not in sequence  # Ark has no n


# -- expiry ---------------------------------------------------------------------------------


def test_expiry_is_tos_date_plus_expires() -> None:
    url = (
        "https://ark-content-generation-v2-cn-beijing.tos-cn-beijing.volces.com/x/y.jpeg"
        "?X-Tos-Algorithm=TOS4-HMAC-SHA256&X-Tos-Credential=AKLT%2F20261128%2Fcn-beijing"
        "&X-Tos-Date=20261128T060000Z&X-Tos-Expires=86400&X-Tos-SignedHeaders=host"
        "&X-Tos-Signature=abc"
    )

    assert external_url_expiry(url) == datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a.jpeg",
        "https://example.com/a.jpeg?X-Tos-Date=20261128T060000Z",
        "https://example.com/a.jpeg?X-Tos-Expires=3600",
        "https://example.com/a.jpeg?X-Tos-Date=yesterday&X-Tos-Expires=3600",
        "https://example.com/a.jpeg?X-Tos-Date=20261128T060000Z&X-Tos-Expires=soon",
        "",
    ],
)
def test_expiry_is_unknown_when_the_url_does_not_say(url: str) -> None:
    assert external_url_expiry(url) is None


# -- choosing the upstream ---------------------------------------------------------------------


def test_without_an_ark_key_every_model_uses_the_demo_upstream(
    settings: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    settings.ARK_API_KEY = ""
    settings.DEMO_UPSTREAM_URL = demo_upstream.base_url
    client = client_for(SEEDREAM_4)

    assert client.base_url == demo_upstream.api_base_url
    assert isinstance(generate(client, unique_prompt())[0], UpstreamImage)
    assert posts(demo_upstream)[0]["headers"]["Authorization"] == "Bearer demo"


def test_with_an_ark_key_ark_models_use_ark_and_demo_models_the_demo(
    settings: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    settings.ARK_API_KEY = "ark-secret-key"
    settings.ARK_BASE_URL = "http://127.0.0.1:9/api/v3"  # never reached in this test
    settings.DEMO_UPSTREAM_URL = demo_upstream.base_url
    demo_model = ImageModel(
        name="Demo", provider=ImageModel.Provider.DEMO, upstream_model_id="demo-pattern"
    )

    assert client_for(SEEDREAM_4).base_url == "http://127.0.0.1:9/api/v3"
    demo_client = client_for(demo_model)
    assert demo_client.base_url == demo_upstream.api_base_url
    generate(demo_client, unique_prompt(), model=demo_model)
    # The real key never goes to the demo upstream.
    assert posts(demo_upstream)[0]["headers"]["Authorization"] == "Bearer demo"
    assert "ark-secret-key" not in repr(client_for(SEEDREAM_4))


# -- retries by Ark's error code ----------------------------------------------------------------


class WatchedTime:
    """A clock and a sleep for the client: pauses are recorded and pass at once."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.offset += seconds

    def clock(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def watched_time() -> WatchedTime:
    return WatchedTime()


@pytest.fixture
def patient_client(make_ark_client: Any, watched_time: WatchedTime) -> ArkClient:
    """A client with Ark's defaults for retrying, whose pauses pass at once."""
    return make_ark_client(
        max_retries=5,
        retry_backoff=2.0,
        retry_budget=120.0,
        sleep=watched_time.sleep,
        clock=watched_time.clock,
    )


def test_a_spent_quota_is_asked_for_once(
    patient_client: ArkClient,
    demo_upstream: DemoUpstream,
    watched_time: WatchedTime,
    unique_prompt: Any,
) -> None:
    error = only_error(generate(patient_client, unique_prompt("[demo:error=QuotaExceeded]")))

    assert error.code == "QuotaExceeded"
    assert "quota" in error.message
    assert len(posts(demo_upstream)) == 1
    assert watched_time.pauses == []


@pytest.mark.parametrize(
    "code",
    [
        "SetLimitExceeded",
        "AccountOverdueError",
        "AuthenticationError",
        "AccessDenied",
        "InputTextSensitiveContentDetected",
        "InputImageSensitiveContentDetected",
        "SensitiveContentDetected",
        "InvalidParameter",
        "MissingParameter",
        "InvalidEndpointOrModel.NotFound",
        "ModelNotOpen",
    ],
)
def test_what_waiting_cannot_cure_is_not_asked_again(
    patient_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any, code: str
) -> None:
    error = only_error(generate(patient_client, unique_prompt(f"[demo:error={code}]")))

    assert error.code == code
    assert len(posts(demo_upstream)) == 1


@pytest.mark.parametrize(
    "code",
    [
        "RateLimitExceeded.EndpointRPMExceeded",
        "RateLimitExceeded.EndpointTPMExceeded",
        "ModelAccountRpmRateLimitExceeded",
        "ModelAccountTpmRateLimitExceeded",
        "ModelAccountIpmRateLimitExceeded",
        "APIAccountRpmRateLimitExceeded",
        "ServerOverloaded",
        "InternalServiceError",
    ],
)
def test_rate_limits_and_overload_are_asked_again_after_seconds(
    patient_client: ArkClient,
    demo_upstream: DemoUpstream,
    watched_time: WatchedTime,
    unique_prompt: Any,
    code: str,
) -> None:
    prompt = unique_prompt(f"[demo:flaky=2] [demo:error={code}]")
    items = generate(patient_client, prompt)

    assert isinstance(items[0], UpstreamImage)
    assert len(posts(demo_upstream)) == 3
    # Pauses in seconds, growing: a limit counted per minute is not over in half a second.
    first, second = watched_time.pauses
    assert 1.6 <= first <= 2.4
    assert 3.2 <= second <= 4.8


def test_a_rate_limit_is_asked_again_after_the_retry_after_it_sent(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    client = make_ark_client(max_retries=5, retry_backoff=0.01)
    prompt = unique_prompt("[demo:flaky=1] [demo:status=429] [demo:retry_after=1]")
    items = generate(client, prompt)

    assert isinstance(items[0], UpstreamImage)
    first, second = posts(demo_upstream)
    assert second["time"] - first["time"] >= 1.0


def test_a_retry_after_past_the_budget_is_not_waited_for(
    patient_client: ArkClient,
    demo_upstream: DemoUpstream,
    watched_time: WatchedTime,
    unique_prompt: Any,
) -> None:
    prompt = unique_prompt("[demo:status=429] [demo:retry_after=120] [demo:flaky=1]")
    error = only_error(generate(patient_client, prompt))

    assert error.code == "RateLimitExceeded.EndpointRPMExceeded"
    assert "try again in 120 s" in error.message
    assert len(posts(demo_upstream)) == 1
    assert watched_time.pauses == []


def test_retries_end_within_the_budget(
    make_ark_client: Any,
    demo_upstream: DemoUpstream,
    watched_time: WatchedTime,
    unique_prompt: Any,
) -> None:
    client = make_ark_client(
        max_retries=50,
        retry_backoff=2.0,
        retry_budget=60.0,
        sleep=watched_time.sleep,
        clock=watched_time.clock,
    )
    error = only_error(generate(client, unique_prompt("[demo:error=ServerOverloaded]")))

    assert error.code == "ServerOverloaded"
    assert sum(watched_time.pauses) <= 60.0
    assert max(watched_time.pauses) <= 30.0 * 1.2  # the pause stops doubling at 30 s
    assert len(posts(demo_upstream)) == len(watched_time.pauses) + 1 >= 4


def test_a_connection_never_made_is_tried_again(
    watched_time: WatchedTime, unique_prompt: Any
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = ArkClient(
        base_url=f"http://127.0.0.1:{closed_port}/api/v3",
        api_key="demo",
        connect_timeout=1,
        read_timeout=1,
        max_retries=2,
        sleep=watched_time.sleep,
        clock=watched_time.clock,
    )

    error = only_error(generate(client, unique_prompt()))

    assert error.code == "UpstreamConnectionError"
    assert len(watched_time.pauses) == 2


def test_a_read_timeout_after_sending_says_it_may_be_billed(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    client = make_ark_client(read_timeout=0.3, max_retries=5)
    error = only_error(generate(client, unique_prompt("[demo:slow=1]")))

    assert error.code == "UpstreamTimeout"
    assert "may bill it" in error.message
    assert "not sent again" in error.message
    assert len(posts(demo_upstream)) == 1


@pytest.mark.parametrize(
    ("status", "code", "retried"),
    [
        (429, "QuotaExceeded", False),
        (429, "SetLimitExceeded", False),
        (429, "RateLimitExceeded.EndpointRPMExceeded", True),
        (429, "ModelAccountIpmRateLimitExceeded", True),
        (429, "SomethingNew", True),
        (400, "OutputImageSensitiveContentDetected.DeepFake", False),
        (400, "InputImageSensitiveContentDetected.PrivacyInformation", False),
        (400, "InvalidParameter.Size", False),
        (400, "InvalidEndpoint.ClosedEndpoint", False),
        (403, "OperationDenied.ServiceOverdue", False),
        (400, "PromptRiskDetection", False),
        (500, "InternalServiceError", True),
        (502, "UpstreamHTTPError", True),
        (404, "NotFound", False),
    ],
)
def test_retrying_is_decided_on_arks_code(status: int, code: str, retried: bool) -> None:
    assert is_retryable(status=status, code=code) is retried


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 1.5 ", 1.5),
        ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_a_date(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)

    assert retry_after_seconds(header, now=now) == seconds


# -- streaming -------------------------------------------------------------------------------


def test_a_streamed_group_hands_each_image_on_in_order_with_the_usage(
    ark_client: ArkClient, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    handed: list[Any] = []
    answer = ark_client.generate_answer(
        model_id=SEEDREAM_4.upstream_model_id,
        prompt=unique_prompt("[demo:item_error]"),
        size="1280x720",
        params={"max_images": 3},
        image=None,
        capabilities=SEEDREAM_4.capabilities,
        stream=True,
        on_item=handed.append,
    )

    assert handed == answer.items
    assert [type(item) for item in handed] == [UpstreamError, UpstreamImage, UpstreamImage]
    assert handed[0].code == "OutputImageSensitiveContentDetected"
    assert answer.usage == UpstreamUsage(generated_images=2, output_tokens=2 * 1280 * 720 // 256)
    sent = posts(demo_upstream)[0]
    assert sent["json"]["stream"] is True
    assert sent["headers"]["Accept"] == "text/event-stream"


def test_an_error_before_the_stream_starts_is_retried_like_any_other(
    make_ark_client: Any, demo_upstream: DemoUpstream, unique_prompt: Any
) -> None:
    client = make_ark_client(max_retries=2, retry_backoff=0.01)
    handed: list[Any] = []
    answer = client.generate_answer(
        model_id=SEEDREAM_4.upstream_model_id,
        prompt=unique_prompt("[demo:flaky=1] [demo:error=ServerOverloaded]"),
        size="1280x720",
        params={},
        image=None,
        capabilities=SEEDREAM_4.capabilities,
        stream=True,
        on_item=handed.append,
    )

    assert [type(item) for item in handed] == [UpstreamImage]  # the refusal is not handed on
    assert handed == answer.items
    assert len(posts(demo_upstream)) == 2


def events_of(*pieces: bytes) -> list[tuple[str, str]]:
    return [(e.event, e.data) for e in sse_events(iter(pieces))]


def test_server_sent_events_are_read_whatever_the_pieces() -> None:
    body = (
        b": a comment\r\n"
        b"event: image_generation.partial_succeeded\r\n"
        b'data: {"image_index": 0,\r\n'
        b'data:  "size": "2048\xc3\x972048"}\r\n'
        b"\r\n"
        b"id: 7\n"
        b"data: [DONE]\n\n"
    )
    whole = events_of(body)
    byte_by_byte = events_of(*(body[i : i + 1] for i in range(len(body))))

    assert (
        whole
        == byte_by_byte
        == [
            (
                "image_generation.partial_succeeded",
                '{"image_index": 0,\n "size": "2048\u00d72048"}',
            ),
            ("", "[DONE]"),
        ]
    )


def test_a_last_event_without_its_blank_line_is_still_read() -> None:
    assert events_of(b'event: x\ndata: {"a": 1}') == [("x", '{"a": 1}')]
