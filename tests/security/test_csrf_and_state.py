"""State changes: CSRF on every session POST, no GET that changes anything, and the
destructive gallery actions ask for their confirmation first.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from generations.models import (
    ApiToken,
    Generation,
    GenerationResult,
    Prompt,
    ResultTag,
    Share,
)
from generations.services.sharing import share_create
from tests.security.conftest import World, stored_result
from tests.security.test_access_matrix import ROUTES, TAG, Route, path_of, request

pytestmark = [pytest.mark.security, pytest.mark.django_db]

# Every request a session makes that may change something: each needs its CSRF token.
SESSION_POSTS = [r for r in ROUTES if r.method in ("POST", "PUT", "DELETE")]


def snapshot(storage_root: Path, broker: Any) -> dict[str, Any]:
    """Everything a request could change: rows, stored objects, queued tasks."""
    from django.conf import settings

    with socket.create_connection(("127.0.0.1", broker.port), timeout=2) as sock:
        sock.sendall(f"LLEN {settings.CELERY_TASK_DEFAULT_QUEUE}\r\n".encode())
        queued = sock.recv(64)
    return {
        "prompts": list(Prompt.objects.values_list("pk", "text")),
        "generations": list(Generation.objects.values_list("pk", flat=True)),
        "results": list(
            GenerationResult.objects.values_list(
                "pk", "storage_status", "storage_attempts", "storage_key", "image_url", "favorite"
            )
        ),
        "tags": sorted(ResultTag.objects.values_list("result_id", "tag__name")),
        "tokens": list(ApiToken.objects.values_list("pk", "revoked_at")),
        "shares": list(Share.objects.values_list("pk", "revoked_at")),
        "objects": sorted(str(p) for p in storage_root.rglob("*") if p.is_file()),
        "queued": queued,
    }


def _staff(world: World) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="staff")


@pytest.mark.parametrize("route", SESSION_POSTS, ids=str)
def test_a_session_post_without_its_csrf_token_is_refused_and_changes_nothing(
    route: Route, world: World, demo: Any, image_storage_root: Path, own_broker: Any
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(_staff(world))
    before = snapshot(image_storage_root, own_broker)

    refused = request(client, route, world)
    assert refused.status_code == 403
    assert snapshot(image_storage_root, own_broker) == before

    # With the token (from the cookie, as the page's form sends it) the same POST works.
    client.get("/gallery/")
    token = client.cookies["csrftoken"].value
    if route.kind == "api":
        accepted = request(client, route, world, HTTP_X_CSRFTOKEN=token)
    else:
        ids = {"result": world.result.pk, "generation": world.generation.pk}
        data = {k: str(v).format(**ids) for k, v in route.data.items()}
        accepted = client.post(path_of(route, world), data={**data, "csrfmiddlewaretoken": token})
    assert accepted.status_code == route.ok


def test_a_bearer_token_needs_no_csrf_token(world: World, demo: Any) -> None:
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=world_token(world))
    response = client.post(
        "/api/generate",
        data=json.dumps({"prompt": "a fox", "modelIds": ["doubao-seedream-4-0-250828"]}),
        content_type="application/json",
    )
    assert response.status_code == 200


def world_token(world: World) -> str:
    client = world.callers["valid_token"]()
    return client.defaults["HTTP_AUTHORIZATION"]


def test_login_and_logout_need_csrf(world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "staff", "password": "staff-pass-123"})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session
    client.force_login(_staff(world))
    assert client.post("/accounts/logout/").status_code == 403
    assert client.get("/accounts/logout/").status_code == 405  # logging out is a POST
    assert "_auth_user_id" in client.session


def test_no_get_changes_anything(
    world: World, demo: Any, image_storage_root: Path, own_broker: Any
) -> None:
    """Every route, including the POST-only ones, fetched with GET by every caller."""
    pending = stored_result(prompt="a pending fox")
    GenerationResult.objects.filter(pk=pending.pk).update(storage_status="failed")
    share = share_create(user=_staff(world), result_ids=[world.result.pk])
    paths = {r.path for r in ROUTES} | {"/accounts/logout/"}
    before = snapshot(image_storage_root, own_broker)
    for caller, make_client in world.callers.items():
        for path in sorted(paths):
            url = path.format(
                result=pending.pk,
                doomed=pending.pk,
                generation=world.generation.pk,
                tag=TAG,
                share=share.pk,
                token=share.token,
            )
            response = make_client().get(url)
            if url == "/healthz":
                # Its 503 is an answer, not a failure: a result is at risk (the failed one
                # above) and no worker runs to store it.
                assert response.status_code in (200, 503), (caller, response.status_code)
                assert set(response.json()) >= {"database", "workers", "atRisk"}
            else:
                assert response.status_code < 500, (caller, url, response.status_code)
            assert snapshot(image_storage_root, own_broker) == before, (caller, url)


def test_destructive_actions_ask_first(world: World, image_storage_root: Path) -> None:
    client = world.callers["staff_session"]()
    other = stored_result(prompt="another fox")
    ids = [world.result.pk, other.pk]

    # Bulk delete without the confirmation shows what would go, and deletes nothing.
    page = client.post("/gallery/bulk/", {"action": "delete", "ids": ids})
    assert page.status_code == 200
    assert b"confirmed" in page.content
    assert GenerationResult.objects.filter(pk__in=ids).count() == 2
    # Deleting one asks on GET, and only a POST deletes.
    assert client.get(f"/gallery/{other.pk}/delete/").status_code == 200
    assert GenerationResult.objects.filter(pk=other.pk).exists()
    # Clearing everything needs the typed word, exactly.
    for typed in ("", "delete", "yes", " DELET"):
        client.post("/gallery/clear/", {"confirmation": typed})
        assert GenerationResult.objects.count() == 2, typed
    files_before = sorted(image_storage_root.rglob("*.jpg"))
    assert len(files_before) == 2

    with_commit = client.post(
        "/gallery/bulk/", {"action": "delete", "ids": ids, "confirmed": "yes"}
    )
    assert with_commit.status_code == 302
    assert not GenerationResult.objects.filter(pk__in=ids).exists()
