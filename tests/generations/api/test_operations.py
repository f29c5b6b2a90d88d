"""The result operations: list with filters and a cursor, read, delete, re-store; who may
call them; what a bad parameter gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from generations.models import ApiToken, GenerationResult
from generations.services.organize import results_add_tags
from tests.factories import GenerationFactory, GenerationResultFactory, mark_stored

pytestmark = pytest.mark.django_db


def make_results(n: int, **kwargs: Any) -> list[GenerationResult]:
    return [GenerationResultFactory(**kwargs) for _ in range(n)]


# --- who may call ----------------------------------------------------------------------


def _operations(result_id: int) -> list[tuple[str, str]]:
    return [
        ("get", "/api/results"),
        ("get", f"/api/results/{result_id}"),
        ("delete", f"/api/results/{result_id}"),
        ("post", f"/api/results/{result_id}/restore"),
    ]


def test_anonymous_callers_and_non_staff_get_the_error_body(plain_user: Any) -> None:
    result = GenerationResultFactory()
    key = ApiToken.new_key()
    ApiToken.objects.create(user=plain_user, prefix=key[:10], key_hash=ApiToken.hash_key(key))
    session = Client()
    session.force_login(plain_user)
    for method, path in _operations(result.pk):
        anonymous = getattr(Client(), method)(path)
        assert anonymous.status_code == 401, path
        assert anonymous.json()["error"]["code"] == "unauthorized"
        for caller in (session, Client(HTTP_AUTHORIZATION=f"Bearer {key}")):
            refused = getattr(caller, method)(path)
            assert refused.status_code == 403, path
            assert refused.json()["error"]["code"] == "forbidden"
    assert GenerationResult.objects.filter(pk=result.pk).exists()


def test_a_staff_session_reads_and_needs_the_csrf_token_to_delete(staff_user: Any) -> None:
    result = GenerationResultFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.get(f"/api/results/{result.pk}").json()["id"] == result.pk
    refused = client.delete(f"/api/results/{result.pk}")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    refused = client.post(f"/api/results/{result.pk}/restore")
    assert refused.json()["error"]["code"] == "csrf_failed"
    assert GenerationResult.objects.filter(pk=result.pk).exists()

    client.get("/gallery/")
    token = client.cookies["csrftoken"].value
    assert client.delete(f"/api/results/{result.pk}", HTTP_X_CSRFTOKEN=token).status_code == 204
    assert not GenerationResult.objects.filter(pk=result.pk).exists()


def test_wrong_methods_get_405_with_allow(token_client: Client) -> None:
    result = GenerationResultFactory()
    response = token_client.put(f"/api/results/{result.pk}")
    assert response.status_code == 405
    assert response["Allow"] == "GET, DELETE"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert token_client.get(f"/api/results/{result.pk}/restore")["Allow"] == "POST"
    # The caller is known before the method is judged.
    assert Client().put(f"/api/results/{result.pk}").status_code == 401


# --- listing ---------------------------------------------------------------------------


def test_the_cursor_walks_every_result_once_newest_first_while_new_ones_arrive(
    token_client: Client,
) -> None:
    made = make_results(7)
    seen: list[int] = []
    response = token_client.get("/api/results?limit=3").json()
    pages = 1
    while True:
        seen += [r["id"] for r in response["results"]]
        GenerationResultFactory()  # a result made during the walk: newer than the cursor
        if response["next"] is None:
            break
        response = token_client.get(f"/api/results?limit=3&cursor={response['next']}").json()
        pages += 1
    assert pages == 3
    assert seen == sorted((r.pk for r in made), reverse=True)


def test_filters_narrow_the_list(token_client: Client) -> None:
    starred, tagged, failed = make_results(3)
    GenerationResult.objects.filter(pk=starred.pk).update(favorite=True)
    results_add_tags(result_ids=[tagged.pk], names=["Night Sky"])
    GenerationResult.objects.filter(pk=failed.pk).update(status="FAILED")
    fox = GenerationResultFactory(generation=GenerationFactory(prompt_text="a quokka at dawn"))

    def ids(query: str) -> list[int]:
        response = token_client.get(f"/api/results?{query}")
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    assert ids("favorite=true") == [starred.pk]
    assert ids("tag=night%20sky") == [tagged.pk]
    assert ids("status=FAILED") == [failed.pk]
    assert ids("q=QUOKKA%20AT") == [fox.pk]
    assert ids(f"model={fox.model_id}") == [fox.pk]
    assert ids("favorite=false") == [fox.pk, failed.pk, tagged.pk, starred.pk]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=201", "limit"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("cursor=abc", "cursor"),
        ("since=yesterday", "since"),
        # A number is not a day (it would otherwise read as seconds since 1970).
        ("until=0", "until"),
        ("since=1767225600", "since"),
        ("size=big", "size"),
        ("aspect=16%2F9", "aspect"),
        ("since=2026-02-02&until=2026-01-01", "until"),
        ("model=999999", "model"),
        ("storage=lost", "storage"),
        ("seed=" + "9" * 30, "seed"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(token_client: Client, query: str, field: str) -> None:
    response = token_client.get(f"/api/results?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["field"] == field


def test_a_page_costs_the_same_queries_however_many_results(token_client: Client) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = token_client.get("/api/results?limit=200&tag=night")
            assert response.status_code == 200
        return len(ctx.captured_queries)

    results_add_tags(result_ids=[r.pk for r in make_results(2)], names=["night", "sky"])
    queries()  # the token's first use of the minute records it
    few = queries()
    results_add_tags(result_ids=[r.pk for r in make_results(20)], names=["night", "dusk"])
    assert token_client.get("/api/results?tag=night").json()["results"][0]["tags"] == [
        "dusk",
        "night",
    ]
    assert queries() == few


# --- one result ------------------------------------------------------------------------


def test_a_result_answers_its_json_with_its_new_fields(token_client: Client) -> None:
    result = mark_stored(GenerationResultFactory())
    body = token_client.get(f"/api/results/{result.pk}").json()
    assert body["id"] == result.pk
    assert body["generationId"] == result.generation_id
    assert body["storageStatus"] == "stored"
    assert (body["width"], body["height"]) == (result.width, result.height)
    assert body["sha256"] == result.sha256
    assert body["createdAt"].startswith(str(result.created_at.date()))
    assert token_client.get("/api/results/999999").status_code == 404


def test_delete_takes_the_row_and_its_objects_once_committed(
    token_client: Client, image_storage_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    result = mark_stored(GenerationResultFactory())
    assert list(image_storage_root.rglob("*.*"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = token_client.delete(f"/api/results/{result.pk}")
    assert [p for p in image_storage_root.rglob("*") if p.is_file()]  # not before the commit
    for callback in callbacks:
        callback()
    assert response.status_code == 204
    assert not GenerationResult.objects.filter(pk=result.pk).exists()
    assert not [p for p in image_storage_root.rglob("*") if p.is_file()]
    again = token_client.delete(f"/api/results/{result.pk}")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "not_found"


def test_restore_queues_a_failed_result_and_leaves_a_stored_one(token_client: Client) -> None:
    stored = mark_stored(GenerationResultFactory())
    assert token_client.post(f"/api/results/{stored.pk}/restore").status_code == 200
    failed = GenerationResultFactory(
        storage_status="failed", external_url="https://example.com/a.jpg"
    )
    response = token_client.post(f"/api/results/{failed.pk}/restore")
    assert response.status_code == 202, response.content
    assert response.json()["storageStatus"] == "pending"
    lost = GenerationResultFactory(storage_status="expired")
    refused = token_client.post(f"/api/results/{lost.pk}/restore")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_restorable"


def test_an_id_no_row_can_have_is_not_found_whatever_the_method(token_client: Client) -> None:
    huge = "9" * 30
    for method, path in (
        ("get", f"/api/results/{huge}"),
        ("delete", f"/api/results/{huge}"),
        ("post", f"/api/results/{huge}/restore"),
    ):
        response = getattr(token_client, method)(path)
        assert response.status_code == 404, (method, response.content)
        assert response.json()["error"]["code"] == "not_found"


def test_a_path_no_operation_takes_is_the_api_s_404_after_the_caller_is_known(
    token_client: Client,
) -> None:
    for method, path in (
        ("get", "/api/results/abc"),
        ("delete", "/api/results/-1"),
        ("post", "/api/results/null,null/restore"),
        ("get", "/api/generations/1.5"),
        ("get", "/api/nothing/here"),
    ):
        response = getattr(token_client, method)(path)
        assert response.status_code == 404, (method, path, response.content)
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"
        anonymous = getattr(Client(), method)(path)
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.json()["error"]["code"] == "unauthorized"
