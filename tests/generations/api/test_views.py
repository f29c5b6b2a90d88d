"""The JSON API: who may call it, what bad input gets, what a generation answers, and
stars and tags on results."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generations.models import ApiToken, Generation, GenerationResult, ImageModel, Tag
from generations.services.organize import results_add_tags
from tests.conftest import wait_for
from tests.factories import (
    GenerationFactory,
    GenerationResultFactory,
    jpeg_bytes,
    mark_stored,
    png_bytes,
)

pytestmark = pytest.mark.django_db

SEEDREAM_4 = "doubao-seedream-4-0-250828"
SEEDREAM_3 = "doubao-seedream-3-0-t2i-250415"


def post(client: Client, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post("/api/generate", data=data, content_type="application/json", **extra)


# --- authentication ---------------------------------------------------------------


def test_anonymous_caller_gets_401_json(client: Client) -> None:
    response = post(client, {"prompt": "a fox", "modelIds": [SEEDREAM_4]})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert client.get("/api/generations/1").status_code == 401
    assert client.get("/api/images/1").status_code == 401


def test_wrong_and_revoked_tokens_get_401(api_token: str) -> None:
    wrong = Client(HTTP_AUTHORIZATION="Bearer gv_not-a-real-token")
    assert post(wrong, {"prompt": "a fox", "modelIds": [SEEDREAM_4]}).status_code == 401
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
    revoked = Client(HTTP_AUTHORIZATION=f"Bearer {api_token}")
    response = revoked.get("/api/generations/1")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_non_staff_session_gets_403(plain_user: Any) -> None:
    client = Client()
    client.force_login(plain_user)
    response = client.get("/api/generations/1")
    assert response.status_code == 403
    assert response.json() == {"error": {"code": "forbidden", "message": "staff only"}}


def test_staff_session_post_needs_csrf(staff_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    response = post(client, {"prompt": "a fox", "modelIds": [SEEDREAM_4]})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert not Generation.objects.exists()


def test_token_is_stored_hashed(api_token: str) -> None:
    token = ApiToken.objects.get()
    assert token.key_hash == ApiToken.hash_key(api_token)
    assert api_token not in {token.key_hash, token.prefix, token.name}


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"prompt": "", "modelIds": [SEEDREAM_4]}, "prompt", "empty"),
        ({"prompt": "   ", "modelIds": [SEEDREAM_4]}, "prompt", "empty"),
        ({"modelIds": [SEEDREAM_4]}, "prompt", "required"),
        ({"prompt": 42, "modelIds": [SEEDREAM_4]}, "prompt", "string"),
        ({"prompt": "a fox", "modelIds": ["no-such-model"]}, "modelIds", "unknown model"),
        ({"prompt": "a fox", "modelIds": []}, "modelIds", "at least one"),
        ({"prompt": "a fox", "modelIds": "doubao"}, "modelIds", "list"),
        ({"prompt": "a fox", "modelIds": [True]}, "modelIds", "ids or names"),
        ({"prompt": "a fox", "modelIds": [SEEDREAM_4], "size": "huge"}, "size", "not 1K"),
        ({"prompt": "a fox", "modelIds": [SEEDREAM_4], "size": "9000x9000"}, "size", "16,777,216"),
        ({"prompt": "a fox", "modelIds": [SEEDREAM_4], "size": 2048}, "size", "string"),
        (
            {"prompt": "a fox", "modelIds": [SEEDREAM_4], "params": {"seed": "x"}},
            "params.seed",
            "integer",
        ),
        ({"prompt": "a fox", "modelIds": [SEEDREAM_4], "params": {"n": 4}}, "params.n", "unknown"),
        ({"prompt": "a fox", "modelIds": [SEEDREAM_4], "params": []}, "params", "object"),
        (
            {"prompt": "a fox", "modelIds": [SEEDREAM_4], "image": "http://127.0.0.1/x.png"},
            "image",
            "https",
        ),
        (
            {"prompt": "a fox", "modelIds": [SEEDREAM_4], "image": "https://10.0.0.1/x.png"},
            "image",
            "private",
        ),
        ({"prompt": "a fox", "modelIds": [SEEDREAM_4], "image": "result:999"}, "image", "no image"),
        (
            {"prompt": "a fox", "modelIds": ["doubao-seededit-3-0-i2i-250628"]},
            "image",
            "needs a reference",
        ),
        (
            {"prompt": "a fox", "modelIds": [SEEDREAM_3], "image": "https://example.com/a.png"},
            "image",
            "does not take",
        ),
        ({"promptId": 12345, "modelIds": [SEEDREAM_4]}, "promptId", "no prompt"),
        ({"prompt": "a fox", "modelIds": [SEEDREAM_4], "colour": "red"}, "colour", "unknown field"),
        ([1, 2, 3], "body", "JSON object"),
        ({"prompt": "a fox", "modelIds": [SEEDREAM_4], "wait": "no"}, "wait", "true or false"),
        # In the background too, bad input is refused before anything is recorded or queued.
        ({"promptId": 12345, "modelIds": [SEEDREAM_4], "wait": False}, "promptId", "no prompt"),
    ],
)
def test_bad_input_gets_400_naming_the_field(
    token_client: Client, body: Any, field: str, words: str
) -> None:
    response = post(token_client, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["field"] == field
    assert words in error["message"]
    assert not Generation.objects.exists()


def test_disabled_model_is_refused(token_client: Client) -> None:
    ImageModel.objects.filter(upstream_model_id=SEEDREAM_4).update(enabled=False)
    response = post(token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_4]})
    assert response.status_code == 400
    assert "disabled" in response.json()["error"]["message"]


def test_malformed_json_gets_400(token_client: Client) -> None:
    response = post(token_client, b'{"prompt": "a fox", "modelIds": [')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_wrong_method_gets_405_json(token_client: Client) -> None:
    response = token_client.get("/api/generate")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- generating -------------------------------------------------------------------------


def test_generate_returns_success_with_a_real_jpeg_from_the_demo_upstream(
    demo: Any, token_client: Client
) -> None:
    response = post(
        token_client, {"prompt": "a red fox in snow", "modelIds": [SEEDREAM_4], "size": "1024x1024"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    (result,) = body["results"]
    assert result["status"] == "SUCCESS"
    assert result["storageStatus"] == "pending"
    assert result["error"] is None
    assert result["imageUrl"] == result["externalImageUrl"]
    image = requests.get(result["externalImageUrl"], timeout=10)
    assert image.status_code == 200
    assert image.content[:3] == b"\xff\xd8\xff"  # a JPEG

    row = GenerationResult.objects.get(pk=result["id"])
    assert row.external_url == result["externalImageUrl"]
    assert row.external_url_expires_at is not None
    assert "externalImageUrl" not in row.params_used  # the column is the record
    assert result["paramsUsed"]["externalImageUrl"] == row.external_url
    assert row.generation.prompt_text == "a red fox in snow"


def test_model_ids_accept_id_name_and_upstream_id(demo: Any, token_client: Client) -> None:
    by_id = ImageModel.objects.get(upstream_model_id=SEEDREAM_4).pk
    for ref in (by_id, "Seedream 4.0", SEEDREAM_4):
        response = post(token_client, {"prompt": "a fox", "modelIds": [ref]})
        assert response.status_code == 200
        assert response.json()["results"][0]["model"] == SEEDREAM_4


def test_mixed_success_and_failure_answer_200(demo: Any, token_client: Client) -> None:
    ImageModel.objects.create(name="Retired", provider="ark", upstream_model_id="retired-model-v1")
    response = post(token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_4, "Retired"]})
    assert response.status_code == 200
    good, bad = response.json()["results"]
    assert (good["status"], good["storageStatus"]) == ("SUCCESS", "pending")
    assert (bad["status"], bad["storageStatus"]) == ("FAILED", None)
    assert bad["error"]["code"] == "InvalidEndpointOrModel.NotFound"
    assert bad["imageUrl"] is None


def test_an_item_error_inside_a_200_fails_only_that_image(demo: Any, token_client: Client) -> None:
    body = {
        "prompt": "a fox [demo:item_error]",
        "modelIds": [SEEDREAM_4],
        "params": {"max_images": 2},
    }
    results = post(token_client, body).json()["results"]
    assert [r["status"] for r in results] == ["FAILED", "SUCCESS"]
    assert results[0]["error"]["code"] == "OutputImageSensitiveContentDetected"


def test_upstream_error_becomes_failed_result_with_code_and_message(
    demo: Any, token_client: Client
) -> None:
    response = post(
        token_client,
        {
            "prompt": "something [demo:error=InputTextSensitiveContentDetected]",
            "modelIds": [SEEDREAM_4],
        },
    )
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["status"] == "FAILED"
    assert result["error"]["code"] == "InputTextSensitiveContentDetected"
    assert "sensitive" in result["error"]["message"]
    assert result["storageStatus"] is None
    row = GenerationResult.objects.get(pk=result["id"])
    assert row.error_code == "InputTextSensitiveContentDetected"


def test_two_models_take_about_as_long_as_one(demo: Any, token_client: Client) -> None:
    """Models are called concurrently: two slow models cost one delay, not two."""
    body = {"prompt": "a slow fox [demo:slow=1.5]", "modelIds": [SEEDREAM_4, SEEDREAM_3]}
    started = time.monotonic()
    response = post(token_client, body)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["SUCCESS", "SUCCESS"]
    assert elapsed < 2.6, f"two 1.5 s models took {elapsed:.1f} s: called one after the other"


def test_sequential_generation_gives_one_result_per_image(demo: Any, token_client: Client) -> None:
    response = post(
        token_client,
        {"prompt": "a comic strip", "modelIds": [SEEDREAM_4], "params": {"max_images": 3}},
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["SUCCESS"] * 3
    assert len({r["externalImageUrl"] for r in results}) == 3


def test_by_default_generate_waits_and_answers_the_generation_done(
    demo: Any, token_client: Client
) -> None:
    response = post(token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_4], "wait": True})
    assert response.status_code == 200
    assert response.json()["status"] == "done"
    assert [r["status"] for r in response.json()["results"]] == ["SUCCESS"]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_wait_false_answers_202_at_once_and_polling_sees_each_image_then_done(
    celery_worker: Any, demo: Any, token_client: Client
) -> None:
    body = {
        "prompt": "three slow foxes [demo:latency=1]",
        "modelIds": [SEEDREAM_4],
        "params": {"max_images": 3},
        "wait": False,
    }
    response = post(token_client, body)

    assert response.status_code == 202, response.content
    started = response.json()
    assert started["status"] == "running"
    assert started["results"] == []  # answered before the first image was made
    location = response["Location"]
    assert location == f"http://testserver/api/generations/{started['generationId']}"

    seen: list[int] = []

    def finished() -> dict[str, Any] | None:
        polled = token_client.get(location).json()
        seen.append(len(polled["results"]))
        return polled if polled["status"] != "running" else None

    final = wait_for(finished, timeout=30, interval=0.1)
    assert final["status"] == "done"
    assert [r["status"] for r in final["results"]] == ["SUCCESS"] * 3
    assert any(0 < n < 3 for n in seen), f"no poll saw the group part-way: {seen}"
    assert final["usage"]["generatedImages"] == 3
    wait_for(
        lambda: all(
            r["storageStatus"] == "stored" for r in token_client.get(location).json()["results"]
        ),
        timeout=30,
    )


def test_generation_detail_answers_the_same_shape(demo: Any, token_client: Client) -> None:
    created = post(token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_4]}).json()
    polled = token_client.get(f"/api/generations/{created['generationId']}").json()
    assert polled["generationId"] == created["generationId"]
    assert polled["results"] == created["results"]
    assert token_client.get("/api/generations/999999").status_code == 404


def test_a_result_whose_link_expired_before_it_was_stored_is_lost_in_the_json(
    token_client: Client,
) -> None:
    generation = GenerationFactory()
    hour = timedelta(hours=1)
    fresh = GenerationResultFactory(
        generation=generation, external_url_expires_at=timezone.now() + hour
    )
    expired_link = GenerationResultFactory(
        generation=generation, external_url_expires_at=timezone.now() - hour
    )
    given_up = GenerationResultFactory(
        generation=generation, storage_status=GenerationResult.StorageStatus.EXPIRED
    )

    body = token_client.get(f"/api/generations/{generation.pk}").json()

    lost = {r["id"]: r["lost"] for r in body["results"]}
    assert lost == {fresh.pk: False, expired_link.pk: True, given_up.pk: True}


def test_a_result_s_thumbnail_url_is_null_until_its_thumbnail_is_made(
    token_client: Client,
) -> None:
    """What the gallery's cards wait for before they show an image: a URL that serves."""
    result = mark_stored(GenerationResultFactory(), thumbnail=False)
    url = f"/api/generations/{result.generation_id}"
    (waiting,) = token_client.get(url).json()["results"]
    assert (waiting["storageStatus"], waiting["thumbnailUrl"]) == ("stored", None)

    mark_stored(result)
    (made,) = token_client.get(url).json()["results"]
    assert made["thumbnailUrl"] == f"http://testserver{result.versioned_thumbnail_url}"
    thumbnail = token_client.get(made["thumbnailUrl"])
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/webp"
    assert thumbnail["Cache-Control"] == "private, max-age=31536000, immutable"


def test_reference_result_is_passed_upstream(demo: Any, token_client: Client) -> None:
    first = post(token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_4]}).json()["results"][0]
    response = post(
        token_client,
        {
            "prompt": "the fox, in winter",
            "modelIds": [SEEDREAM_4],
            "image": f"result:{first['id']}",
        },
    )
    assert response.status_code == 200
    calls = [e for e in demo.request_log if e["method"] == "POST"]
    assert calls[-1]["json"]["image"] == first["externalImageUrl"]
    generation = Generation.objects.get(pk=response.json()["generationId"])
    assert generation.reference_result_id == first["id"]


def test_healthz_reports_each_part_without_auth(client: Client) -> None:
    response = client.get("/healthz")
    body = response.json()
    assert set(body) == {
        "database",
        "storage",
        "broker",
        "workers",
        "oldestPendingSeconds",
        "atRisk",
    }
    assert body["database"] == "ok"
    assert body["storage"] == "ok"
    assert (body["workers"], body["oldestPendingSeconds"], body["atRisk"]) == (0, None, 0)
    assert response.status_code == (200 if body["broker"] == "ok" else 503)


# --- sizes, per model ----------------------------------------------------------------

SEEDREAM_45 = "doubao-seedream-4-5-251128"
SEEDREAM_5_LITE = "doubao-seedream-5-0-260128"
SEEDEDIT_3 = "doubao-seededit-3-0-i2i-250628"
REFERENCE = "https://example.com/a-reference.png"  # the demo upstream never fetches it


def upstream_sizes(demo: Any) -> list[Any]:
    return [e["json"].get("size") for e in demo.request_log if e["method"] == "POST"]


@pytest.mark.parametrize(
    ("model", "size", "words"),
    [
        (SEEDREAM_4, "512x512", "Seedream 4.0 does not take 512x512 (262,144 pixels"),
        (SEEDREAM_4, "adaptive", "Seedream 4.0 does not take adaptive: it takes 1K, 2K or 4K"),
        (SEEDREAM_4, "16384x512", "Seedream 4.0 does not take 16384x512 (an aspect ratio of 32:1)"),
        (SEEDREAM_45, "1K", "Seedream 4.5 does not take 1K: it takes 2K or 4K, or WIDTHxHEIGHT"),
        (SEEDREAM_45, "adaptive", "Seedream 4.5 does not take adaptive"),
        (SEEDREAM_45, "1920x1080", "fewer than 3,686,400"),
        (SEEDREAM_5_LITE, "1K", "Seedream 5.0 lite does not take 1K: it takes 2K, 3K or 4K"),
        (SEEDREAM_3, "1K", "Seedream 3.0 does not take 1K: it takes WIDTHxHEIGHT with each side"),
        (SEEDREAM_3, "2K", "Seedream 3.0 does not take 2K"),
        (SEEDREAM_3, "4K", "Seedream 3.0 does not take 4K"),
        (SEEDREAM_3, "2304x1728", "a side of 2304, longer than 2048"),
        (SEEDEDIT_3, "1024x1024", "SeedEdit 3.0 does not take 1024x1024: it takes only adaptive"),
        (SEEDEDIT_3, "2K", "SeedEdit 3.0 does not take 2K"),
    ],
)
def test_a_size_the_model_does_not_take_is_refused_before_any_call(
    demo: Any, token_client: Client, model: str, size: str, words: str
) -> None:
    body = {"prompt": "a fox", "modelIds": [model], "size": size, "image": REFERENCE}
    if model == SEEDREAM_3:
        del body["image"]  # it takes none
    response = post(token_client, body)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", "size")
    assert words in error["message"]
    assert demo.request_log == []
    assert not Generation.objects.exists()


@pytest.mark.parametrize(
    "upstream_id", [SEEDREAM_4, SEEDREAM_45, SEEDREAM_5_LITE, SEEDREAM_3, SEEDEDIT_3]
)
def test_every_preset_of_every_model_is_taken_by_it_and_by_the_upstream(
    demo: Any, token_client: Client, upstream_id: str
) -> None:
    from generations.sizes import preset_sizes

    model = ImageModel.objects.get(upstream_model_id=upstream_id)
    presets = preset_sizes(model.size_rules)
    assert presets, f"{model.name} is offered no size"
    for size in presets:
        body: dict[str, Any] = {"prompt": f"a fox at {size}", "modelIds": [model.pk], "size": size}
        if model.max_reference_images:
            body["image"] = REFERENCE
        response = post(token_client, body)
        assert response.status_code == 200, (size, response.content)
        (result,) = response.json()["results"]
        assert result["status"] == "SUCCESS", (size, result["error"])
        assert result["paramsUsed"]["size"] == size
    assert upstream_sizes(demo) == presets


def test_seedream_4s_own_4k_presets_are_taken_though_a_side_is_over_4096(
    demo: Any, token_client: Client
) -> None:
    from generations.sizes import preset_sizes

    seedream_4 = ImageModel.objects.get(upstream_model_id=SEEDREAM_4)
    assert {"4704x3520", "5504x3040", "6240x2656"} <= set(preset_sizes(seedream_4.size_rules))
    response = post(
        token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_4], "size": "4704x3520"}
    )

    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["status"] == "SUCCESS"
    assert upstream_sizes(demo) == ["4704x3520"]


def test_each_model_can_have_a_size_of_its_own(demo: Any, token_client: Client) -> None:
    seedream_3 = ImageModel.objects.get(upstream_model_id=SEEDREAM_3)
    response = post(
        token_client,
        {
            "prompt": "a lighthouse",
            "modelIds": [SEEDREAM_4, SEEDREAM_45, SEEDREAM_3],
            # One size for the models without their own: 4.5 would refuse it.
            "size": "1024x1024",
            "sizes": {"Seedream 4.5": "2K", str(seedream_3.pk): "1248x832"},
        },
    )

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["SUCCESS"] * 3
    # Streamed models' rows are recorded as their images arrive, in whatever order.
    assert {(r["model"], r["paramsUsed"]["size"]) for r in results} == {
        (SEEDREAM_4, "1024x1024"),
        (SEEDREAM_45, "2K"),
        (SEEDREAM_3, "1248x832"),
    }
    assert sorted(upstream_sizes(demo)) == ["1024x1024", "1248x832", "2K"]
    assert Generation.objects.get().size == "1024x1024"


def test_a_sizes_map_alone_sizes_its_models_and_leaves_the_others_their_default(
    demo: Any, token_client: Client
) -> None:
    response = post(
        token_client,
        {"prompt": "a fox", "modelIds": [SEEDREAM_45, SEEDREAM_3], "sizes": {SEEDREAM_45: "4K"}},
    )

    assert response.status_code == 200, response.content
    sizes = [r["paramsUsed"]["size"] for r in response.json()["results"]]
    assert sizes == ["4K", "1024x1024"]  # Seedream 3.0's default


@pytest.mark.parametrize(
    ("sizes", "field", "words"),
    [
        ({"Seedream 4.5": "1K"}, "sizes.Seedream 4.5", "Seedream 4.5 does not take 1K"),
        ({SEEDREAM_3: "2K"}, f"sizes.{SEEDREAM_3}", "Seedream 3.0 does not take 2K"),
        ({"Seedream 4.0": "2K"}, "sizes.Seedream 4.0", "not one of modelIds"),
        ({"Seedream 4.5": "2K", SEEDREAM_45: "4K"}, f"sizes.{SEEDREAM_45}", "twice"),
        ({"Seedream 4.5": "huge"}, "sizes.Seedream 4.5", "is not 1K, 2K, 3K, 4K"),
        ({"Seedream 4.5": 2048}, "sizes.Seedream 4.5", "must be a string"),
        (["2K"], "sizes", "an object"),
    ],
)
def test_a_bad_sizes_map_is_refused_naming_its_entry(
    demo: Any, token_client: Client, sizes: Any, field: str, words: str
) -> None:
    response = post(
        token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_45, SEEDREAM_3], "sizes": sizes}
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert demo.request_log == []


def test_the_common_size_still_answers_for_the_models_the_map_leaves_out(
    demo: Any, token_client: Client
) -> None:
    response = post(
        token_client,
        {
            "prompt": "a fox",
            "modelIds": [SEEDREAM_45, SEEDREAM_3],
            "size": "2K",
            "sizes": {SEEDREAM_45: "4K"},
        },
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "size"
    assert "Seedream 3.0 does not take 2K" in error["message"]


def test_an_endpoint_id_works_as_the_upstream_model_id(demo: Any, token_client: Client) -> None:
    ImageModel.objects.create(
        name="Our Seedream 4.5 endpoint",
        upstream_model_id="ep-20250811010554-qn4cd",
        size_labels=["2K", "4K"],
        min_pixels=3_686_400,
    )

    refused = post(
        token_client, {"prompt": "a", "modelIds": ["ep-20250811010554-qn4cd"], "size": "1K"}
    )
    response = post(
        token_client, {"prompt": "a fox", "modelIds": ["ep-20250811010554-qn4cd"], "size": "2K"}
    )

    assert "Our Seedream 4.5 endpoint does not take 1K" in refused.json()["error"]["message"]
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert (result["model"], result["status"]) == ("ep-20250811010554-qn4cd", "SUCCESS")
    assert [e["json"]["model"] for e in demo.request_log if e["method"] == "POST"] == [
        "ep-20250811010554-qn4cd"
    ]


def test_b64_json_is_stored_from_the_answer_byte_for_byte(demo: Any, token_client: Client) -> None:
    body = {"prompt": "a fox, inline", "modelIds": [SEEDREAM_4], "responseFormat": "b64_json"}
    response = post(token_client, body)

    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert (result["status"], result["storageStatus"]) == ("SUCCESS", "stored")
    assert result["externalImageUrl"] is None  # nothing to expire
    # What Ark sent: the same request asked again of the (deterministic) demo upstream.
    (sent,) = [e["json"] for e in demo.request_log if e["method"] == "POST"]
    assert sent["response_format"] == "b64_json"
    again = requests.post(
        demo.api_base_url + "/images/generations",
        json={**sent, "stream": False},  # the same image, in one answer
        headers={"Authorization": "Bearer demo"},
        timeout=10,
    )
    answered = base64.b64decode(again.json()["data"][0]["b64_json"])
    served = token_client.get(f"/api/images/{result['id']}")
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == answered
    row = GenerationResult.objects.get(pk=result["id"])
    assert row.sha256 == hashlib.sha256(answered).hexdigest()
    assert row.external_url == ""
    # No image URL was ever fetched: the bytes came in the answer.
    assert not [e for e in demo.request_log if e["method"] == "GET"]


def test_b64_json_that_is_not_an_image_fails_to_store_and_says_it_is_lost(
    demo: Any, token_client: Client
) -> None:
    body = {
        "prompt": "a page, not a picture [demo:html]",
        "modelIds": [SEEDREAM_4],
        "responseFormat": "b64_json",
    }
    (result,) = post(token_client, body).json()["results"]

    assert (result["status"], result["storageStatus"]) == ("SUCCESS", "failed")
    assert "no URL to fetch it again" in result["storageError"]
    assert GenerationResult.objects.get(pk=result["id"]).is_lost


def test_response_format_is_url_or_b64_json(token_client: Client) -> None:
    body = {"prompt": "a fox", "modelIds": [SEEDREAM_4], "responseFormat": "png"}
    response = post(token_client, body)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "responseFormat"


def test_a_generation_shows_what_ark_counted(demo: Any, token_client: Client) -> None:
    body = {"prompt": "two foxes", "modelIds": [SEEDREAM_4], "size": "1280x720"}
    created = post(token_client, {**body, "params": {"max_images": 2}}).json()

    assert created["usage"] == {"generatedImages": 2, "outputTokens": 2 * 1280 * 720 // 256}
    polled = token_client.get(f"/api/generations/{created['generationId']}").json()
    assert polled["usage"] == created["usage"]


def test_a_generation_ark_counted_nothing_for_shows_no_usage(
    demo: Any, token_client: Client
) -> None:
    body = {"prompt": "a fox [demo:error=QuotaExceeded]", "modelIds": [SEEDREAM_4]}
    created = post(token_client, body).json()

    assert created["usage"] is None
    assert created["results"][0]["error"]["code"] == "QuotaExceeded"


# --- stars and tags ----------------------------------------------------------------------


def result_url(result: GenerationResult | int, tail: str) -> str:
    pk = result if isinstance(result, int) else result.pk
    return f"/api/results/{pk}/{tail}"


def add_tags(client: Client, result: GenerationResult | int, body: Any) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(result_url(result, "tags"), data=data, content_type="application/json")


def test_put_and_delete_favorite_star_and_unstar_and_answer_the_result(
    token_client: Client,
) -> None:
    result = GenerationResultFactory()
    before = token_client.get(f"/api/generations/{result.generation_id}").json()["results"][0]

    starred = token_client.put(result_url(result, "favorite"))
    assert starred.status_code == 200
    body = starred.json()
    assert body["favorite"] is True and body["id"] == result.pk
    # Every key a result always had keeps its value; only the star changed.
    assert {k: v for k, v in body.items() if k != "favorite"} == {
        k: v for k, v in before.items() if k != "favorite"
    }
    assert GenerationResult.objects.get(pk=result.pk).favorite
    assert token_client.put(result_url(result, "favorite")).json()["favorite"] is True

    unstarred = token_client.delete(result_url(result, "favorite"))
    assert unstarred.status_code == 200 and unstarred.json()["favorite"] is False
    assert not GenerationResult.objects.get(pk=result.pk).favorite


def test_posting_tags_adds_them_and_answers_the_result_with_its_tags_sorted(
    token_client: Client,
) -> None:
    result = GenerationResultFactory()
    Tag.objects.create(name="Harbour")
    response = add_tags(token_client, result, {"tags": ["night  sky", "harbour", "Dusk"]})
    assert response.status_code == 200
    assert response.json()["tags"] == ["Dusk", "Harbour", "night sky"]
    assert Tag.objects.count() == 3

    again = add_tags(token_client, result, {"tags": ["DUSK", "moon"]})
    assert again.json()["tags"] == ["Dusk", "Harbour", "moon", "night sky"]


def test_deleting_a_tag_by_name_takes_it_off_in_any_case_even_with_a_slash(
    token_client: Client,
) -> None:
    result = GenerationResultFactory()
    add_tags(token_client, result, {"tags": ["night sky", "A/B test", "dusk"]})
    response = token_client.delete(result_url(result, "tags/Night%20Sky"))
    assert response.status_code == 200
    assert response.json()["tags"] == ["A/B test", "dusk"]
    response = token_client.delete(result_url(result, "tags/a%2Fb%20TEST"))
    assert response.json()["tags"] == ["dusk"]
    # Not there (any more): the result as it is.
    again = token_client.delete(result_url(result, "tags/night%20sky"))
    assert again.status_code == 200 and again.json()["tags"] == ["dusk"]


def test_get_tags_lists_every_tag_by_name_with_its_count(token_client: Client) -> None:
    one, two = GenerationResultFactory(), GenerationResultFactory()
    results_add_tags(result_ids=[one.pk, two.pk], names=["sky"])
    results_add_tags(result_ids=[one.pk], names=["Harbour"])
    Tag.objects.create(name="unused")
    response = token_client.get("/api/tags")
    assert response.status_code == 200
    assert response.json() == {
        "tags": [
            {"name": "Harbour", "count": 1},
            {"name": "sky", "count": 2},
            {"name": "unused", "count": 0},
        ]
    }


@pytest.mark.parametrize(
    ("method", "tail", "body"),
    [
        ("put", "favorite", None),
        ("delete", "favorite", None),
        ("post", "tags", {"tags": ["sky"]}),
        ("delete", "tags/sky", None),
    ],
)
def test_a_missing_result_is_a_json_404(
    token_client: Client, method: str, tail: str, body: Any
) -> None:
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs = {"data": json.dumps(body), "content_type": "application/json"}
    response = getattr(token_client, method)(result_url(999_999, tail), **kwargs)
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "no result with id 999999"}
    }
    assert not Tag.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"tags": ["x" * 51]}, "tags", "longer than 50 characters"),
        ({"tags": [""]}, "tags", "cannot be empty"),
        ({"tags": ["night\nsky"]}, "tags", "control characters"),
        ({"tags": ["a,b"]}, "tags", "cannot hold a comma"),
        ({"tags": [7]}, "tags", "must be text"),
        ({"tags": []}, "tags", "at least one tag"),
        ({"tags": "sky"}, "tags", "a list of tag names"),
        ({}, "tags", "a list of tag names"),
        ({"tags": ["sky"], "color": "red"}, "color", "unknown field"),
        (["sky"], "body", "JSON object"),
    ],
)
def test_bad_tags_get_400_naming_the_field_and_write_nothing(
    token_client: Client, body: Any, field: str, words: str
) -> None:
    result = GenerationResultFactory()
    response = add_tags(token_client, result, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field and words in error["message"], error
    assert not Tag.objects.exists()


def test_malformed_tags_json_gets_400(token_client: Client) -> None:
    response = add_tags(token_client, GenerationResultFactory(), "{not json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_non_staff_token_gets_403_and_changes_nothing(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user(username="bot", password="bot-pass-123")
    key = ApiToken.new_key()
    ApiToken.objects.create(user=user, prefix=key[:10], key_hash=ApiToken.hash_key(key))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    result = GenerationResultFactory()
    for response in [
        client.put(result_url(result, "favorite")),
        client.delete(result_url(result, "favorite")),
        add_tags(client, result, {"tags": ["sky"]}),
        client.delete(result_url(result, "tags/sky")),
        client.get("/api/tags"),
    ]:
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    assert not GenerationResult.objects.get(pk=result.pk).favorite
    assert not Tag.objects.exists()


def test_a_staff_session_needs_the_csrf_token_to_star(staff_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    result = GenerationResultFactory()
    response = client.put(result_url(result, "favorite"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert not GenerationResult.objects.get(pk=result.pk).favorite


def test_wrong_methods_get_405_naming_the_right_ones(token_client: Client) -> None:
    result = GenerationResultFactory()
    assert token_client.get(result_url(result, "favorite"))["Allow"] == "PUT, DELETE"
    assert token_client.get(result_url(result, "tags"))["Allow"] == "POST"
    assert token_client.post("/api/tags").status_code == 405


def test_a_generation_s_results_carry_their_tags_without_a_query_per_result(
    token_client: Client,
) -> None:
    generation = GenerationFactory()
    results = [GenerationResultFactory(generation=generation) for _ in range(2)]
    results_add_tags(result_ids=[r.pk for r in results], names=["sky", "dusk"])

    def poll() -> tuple[dict[str, Any], int]:
        with CaptureQueriesContext(connection) as queries:
            body = token_client.get(f"/api/generations/{generation.pk}").json()
        return body, len(queries)

    poll()  # the token's first use of the minute records itself
    few, few_queries = poll()
    for _ in range(10):
        more = GenerationResultFactory(generation=generation, favorite=True)
        results_add_tags(result_ids=[more.pk], names=["moon"])
    many, many_queries = poll()

    assert [r["tags"] for r in few["results"]] == [["dusk", "sky"], ["dusk", "sky"]]
    assert [r["tags"] for r in many["results"][2:]] == [["moon"]] * 10
    assert [r["favorite"] for r in many["results"]] == [False] * 2 + [True] * 10
    assert many_queries == few_queries


# --- several reference images ----------------------------------------------------------


def test_a_list_of_references_reaches_the_upstream_in_order_in_one_call(
    demo: Any, token_client: Client
) -> None:
    stored_bytes = jpeg_bytes(color=(0, 90, 30))
    stored = mark_stored(GenerationResultFactory(), data=stored_bytes, backend="local")
    upload = base64.b64encode(png_bytes()).decode()
    image = [REFERENCE, f"result:{stored.pk}", f"data:image/png;base64,{upload}"]

    response = post(token_client, {"prompt": "all three", "modelIds": [SEEDREAM_4], "image": image})

    assert response.status_code == 200, response.content
    (sent,) = [e["json"]["image"] for e in demo.request_log if e["method"] == "POST"]
    stored_uri = f"data:image/jpeg;base64,{base64.b64encode(stored_bytes).decode()}"
    assert sent == [REFERENCE, stored_uri, f"data:image/png;base64,{upload}"]
    generation = Generation.objects.get(pk=response.json()["generationId"])
    assert [r.kind for r in generation.references.order_by("position")] == [
        "url",
        "result",
        "upload",
    ]


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ([REFERENCE, REFERENCE + "?2"], "'SeedEdit 3.0' takes at most 1 reference image (2 given)"),
        ([REFERENCE] * 15, "at most 14 reference images (15 given)"),
        ([REFERENCE, 7], "reference image 2 must be a URL or 'result:ID'"),
        ("data:image/png;base64,PHN2Zz4=", "is not a PNG, JPEG or WebP image"),
    ],
    ids=["over-the-model-limit", "over-ark-limit", "not-a-string", "data-uri-not-an-image"],
)
def test_references_a_model_cannot_take_are_refused_before_any_call(
    demo: Any, token_client: Client, image: Any, words: str
) -> None:
    body = {"prompt": "merge", "modelIds": [SEEDEDIT_3], "size": "adaptive", "image": image}
    response = post(token_client, body)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "image"
    assert words in error["message"]
    assert demo.request_log == []


# --- usage and cost ----------------------------------------------------------------------


def priced(upstream_id: str, price: str | None, currency: str = "CNY") -> ImageModel:
    from decimal import Decimal

    model = ImageModel.objects.get(upstream_model_id=upstream_id)
    model.price_per_image = Decimal(price) if price is not None else None
    model.currency = currency
    model.save()
    return model


def test_a_generation_of_a_priced_model_shows_its_status_usage_and_cost(
    demo: Any, token_client: Client
) -> None:
    priced(SEEDREAM_4, "0.2000")
    body = {"prompt": "two foxes", "modelIds": [SEEDREAM_4], "size": "1280x720"}
    created = post(token_client, {**body, "params": {"max_images": 2}}).json()

    assert created["status"] == "done"
    assert created["usage"] == {"generatedImages": 2, "outputTokens": 2 * 1280 * 720 // 256}
    assert created["cost"] == {"amount": "0.4000", "currency": "CNY"}
    polled = token_client.get(f"/api/generations/{created['generationId']}").json()
    assert (polled["status"], polled["usage"], polled["cost"]) == (
        "done",
        created["usage"],
        created["cost"],
    )


def test_a_generation_of_an_unpriced_model_has_a_null_cost(demo: Any, token_client: Client) -> None:
    priced(SEEDREAM_4, None)
    created = post(token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_4]}).json()

    assert created["usage"]["generatedImages"] == 1
    assert created["cost"] is None


def test_failed_images_cost_nothing(demo: Any, token_client: Client) -> None:
    priced(SEEDREAM_4, "0.2000")
    body = {"prompt": "a fox [demo:error=QuotaExceeded]", "modelIds": [SEEDREAM_4]}
    created = post(token_client, body).json()

    assert created["cost"] == {"amount": "0.0000", "currency": "CNY"}


def test_usage_by_model_counts_images_and_cost_of_priced_models_and_keeps_unpriced_apart(
    demo: Any, token_client: Client
) -> None:
    four = priced(SEEDREAM_4, "0.2000")
    three = priced(SEEDREAM_3, None)
    post(token_client, {"prompt": "foxes", "modelIds": [SEEDREAM_4], "params": {"max_images": 3}})
    post(token_client, {"prompt": "a fox", "modelIds": [SEEDREAM_4, SEEDREAM_3]})
    post(token_client, {"prompt": "no [demo:error=QuotaExceeded]", "modelIds": [SEEDREAM_3]})

    body = token_client.get("/api/usage?groupBy=model").json()

    assert body["groupBy"] == "model"
    assert body["rows"] == [
        {
            "model": four.name,
            "images": 4,
            "failed": 0,
            "cost": {"amount": "0.8000", "currency": "CNY"},
        },
        {"model": three.name, "images": 1, "failed": 1, "cost": None},
    ]
    assert body["totals"] == [
        {"images": 4, "failed": 0, "cost": {"amount": "0.8000", "currency": "CNY"}},
        {"images": 1, "failed": 1, "cost": None},
    ]
    today = timezone.now().date().isoformat()
    by_day = token_client.get(f"/api/usage?since={today}&until={today}").json()
    assert [(row["day"], row["images"]) for row in by_day["rows"]] == [(today, 4), (today, 1)]
    by_user = token_client.get("/api/usage?groupBy=user").json()
    assert {row["user"] for row in by_user["rows"]} == {"staff"}
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert token_client.get(f"/api/usage?since={tomorrow}").json()["rows"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("groupBy=week", "groupBy"),
        ("since=yesterday", "since"),
        ("since=2026-02-02&until=2026-02-01", "until"),
    ],
)
def test_a_bad_usage_query_gets_400_naming_the_field(
    token_client: Client, query: str, field: str
) -> None:
    response = token_client.get(f"/api/usage?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


# --- optional parameters -------------------------------------------------------------------


def test_optional_parameters_are_sent_only_to_the_models_that_take_them(
    demo: Any, token_client: Client
) -> None:
    params = {"optimize_prompt_options": {"mode": "standard"}, "output_format": "png"}
    body = {
        "prompt": "a fox",
        "modelIds": [SEEDREAM_4, SEEDREAM_5_LITE, SEEDREAM_3],
        "size": "2048x2048",
        "params": params,
    }
    response = post(token_client, body)

    assert response.status_code == 200, response.content
    assert [r["status"] for r in response.json()["results"]] == ["SUCCESS"] * 3
    sent = {
        e["json"]["model"]: {k: e["json"].get(k) for k in params}
        for e in demo.request_log
        if e["method"] == "POST"
    }
    assert sent == {
        SEEDREAM_4: {"optimize_prompt_options": {"mode": "standard"}, "output_format": None},
        SEEDREAM_5_LITE: params,
        SEEDREAM_3: {"optimize_prompt_options": None, "output_format": None},
    }
    lite = next(r for r in response.json()["results"] if r["model"] == SEEDREAM_5_LITE)
    assert requests.get(lite["externalImageUrl"], timeout=10).content[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("models", "params", "field", "words"),
    [
        (
            [SEEDREAM_4, SEEDREAM_45],
            {"optimize_prompt_options": {"mode": "fast"}},
            "params.optimize_prompt_options",
            "Seedream 4.5 does not take the prompt optimization mode fast: it takes standard",
        ),
        (
            [SEEDREAM_4],
            {"optimize_prompt_options": {"mode": "turbo"}},
            "params.optimize_prompt_options",
            'an object {"mode": "standard" or "fast"}',
        ),
        ([SEEDREAM_5_LITE], {"output_format": "webp"}, "params.output_format", "png or jpeg"),
    ],
)
def test_an_optional_parameter_a_model_does_not_take_is_refused_before_any_call(
    demo: Any, token_client: Client, models: list[str], params: Any, field: str, words: str
) -> None:
    body = {"prompt": "a fox", "modelIds": models, "size": "2048x2048", "params": params}
    response = post(token_client, body)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert demo.request_log == []


def test_starring_an_id_no_row_can_have_is_not_found(token_client: Client) -> None:
    huge = "9" * 30
    for response in (
        token_client.put(f"/api/results/{huge}/favorite"),
        token_client.delete(f"/api/results/{huge}/favorite"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
