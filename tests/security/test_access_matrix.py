"""Every route against every kind of caller: the expected status, and no data in a refusal.

Adding a route is one line of ROUTES: its method, path, who may call it (the kind
decides what each caller gets) and the status a permitted caller gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.http.response import HttpResponseBase

from tests.security.conftest import World, stored_result

pytestmark = [pytest.mark.security, pytest.mark.django_db]

LOGIN = "login"  # 302 to /accounts/login/?next=...
ADMIN_LOGIN = "admin_login"  # 302 to /admin/login/?next=...
OK = "ok"  # the route's own status for a permitted caller

# What each caller gets, by the kind of route.
EXPECTED: dict[str, dict[str, Any]] = {
    "api": {
        "anonymous": 401,
        "non_staff_session": 403,
        "wrong_token": 401,
        "revoked_token": 401,
        "non_staff_token": 403,
        "valid_token": OK,
        "staff_session": OK,
    },
    "gallery": {
        "anonymous": LOGIN,
        "non_staff_session": 403,
        "wrong_token": LOGIN,  # the gallery takes sessions only: a token is no login
        "revoked_token": LOGIN,
        "non_staff_token": LOGIN,
        "valid_token": LOGIN,
        "staff_session": OK,
    },
    "admin": {
        "anonymous": ADMIN_LOGIN,
        "non_staff_session": ADMIN_LOGIN,
        "wrong_token": ADMIN_LOGIN,
        "revoked_token": ADMIN_LOGIN,
        "non_staff_token": ADMIN_LOGIN,
        "valid_token": ADMIN_LOGIN,
        "staff_session": OK,
    },
    "public": dict.fromkeys(
        (
            "anonymous",
            "non_staff_session",
            "wrong_token",
            "revoked_token",
            "non_staff_token",
            "valid_token",
            "staff_session",
        ),
        OK,
    ),
}


@dataclass(frozen=True)
class Route:
    method: str
    # {result} and {generation} are filled in from the world, {tag} with TAG, {share} and
    # {token} with NO_SHARE and NO_TOKEN; {doomed} with a result of each caller's own (a
    # DELETE takes it away, and every permitted caller must find one)
    path: str
    kind: str
    ok: int
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


TAG = "night sky"
# A share id and a link token that no share has: the routes' refusals, for every caller.
NO_SHARE = 999999
NO_TOKEN = "not-a-share:link"
GENERATE_BODY = {"prompt": "a fox", "modelIds": ["doubao-seedream-4-0-250828"], "size": "1280x720"}

ROUTES = [
    Route("GET", "/healthz", "public", 200),
    Route("GET", "/", "public", 302),
    Route("GET", "/accounts/login/", "public", 200),
    Route("POST", "/api/generate", "api", 200, GENERATE_BODY),
    Route("GET", "/api/generations/{generation}", "api", 200),
    Route("PUT", "/api/results/{result}/favorite", "api", 200),
    Route("DELETE", "/api/results/{result}/favorite", "api", 200),
    Route("POST", "/api/results/{result}/tags", "api", 200, {"tags": [TAG]}),
    Route("DELETE", "/api/results/{result}/tags/{tag}", "api", 200),
    Route("GET", "/api/tags", "api", 200),
    Route("GET", "/api/usage?groupBy=model", "api", 200),
    Route("POST", "/api/downloads", "api", 200, {"resultIds": [1]}),
    Route("POST", "/api/shares", "api", 201, {"resultId": "{result}"}),
    Route("GET", "/api/shares", "api", 200),
    Route("DELETE", "/api/shares/{share}", "api", 404),
    # Share links answer anyone; one that no share signed opens nothing.
    Route("GET", "/s/{token}/", "public", 404),
    Route("GET", "/s/{token}/images/{result}", "public", 404),
    Route("GET", "/api/images/{result}", "api", 200),
    Route("HEAD", "/api/images/{result}", "api", 200),
    Route("GET", "/api/images/{result}?download=1", "api", 200),
    Route("GET", "/api/images/{result}/thumbnail", "api", 200),
    Route("GET", "/api/export", "api", 200),
    Route("GET", "/api/results", "api", 200),
    Route("GET", "/api/results?q=fox&favorite=true&limit=200", "api", 200),
    Route("GET", "/api/results/{result}", "api", 200),
    Route("DELETE", "/api/results/{doomed}", "api", 204),
    Route("POST", "/api/results/{result}/restore", "api", 200),
    Route("GET", "/api/openapi.json", "api", 200),
    Route("GET", "/api/docs", "api", 200),
    # The router's root only names where its docs are: nothing, for anyone.
    Route("GET", "/api/", "public", 404),
    Route("GET", "/api/export?images=1", "api", 200),
    Route("GET", "/gallery/", "gallery", 200),
    Route("GET", "/gallery/{result}/", "gallery", 200),
    Route("GET", "/gallery/{result}/viewer/?tag=night+sky&before={result}", "gallery", 200),
    Route("GET", "/gallery/{result}/delete/", "gallery", 200),
    Route("POST", "/gallery/{result}/restore/", "gallery", 302),
    Route("POST", "/gallery/{result}/favorite/", "gallery", 302, {"favorite": "1"}),
    Route("POST", "/gallery/{result}/tags/", "gallery", 302, {"tags": TAG}),
    Route("POST", "/gallery/{result}/tags/remove/", "gallery", 302, {"tag": TAG}),
    Route("POST", "/gallery/bulk/", "gallery", 302, {"action": "favorite", "ids": "{result}"}),
    Route(
        "POST",
        "/gallery/bulk/",
        "gallery",
        302,
        {"action": "add_tags", "ids": "{result}", "tags": TAG},
    ),
    Route("POST", "/gallery/bulk/", "gallery", 302, {"action": "restore", "ids": "{result}"}),
    Route("POST", "/gallery/bulk/", "gallery", 200, {"action": "delete", "ids": "{result}"}),
    Route("POST", "/gallery/bulk/", "gallery", 200, {"action": "download", "ids": "{result}"}),
    Route("GET", "/gallery/download/", "gallery", 200),
    Route("POST", "/gallery/bulk/", "gallery", 302, {"action": "share", "ids": "{result}"}),
    Route("GET", "/gallery/shares/", "gallery", 200),
    Route("POST", "/gallery/shares/new/", "gallery", 302, {"result": "{result}"}),
    Route("POST", "/gallery/shares/{share}/revoke/", "gallery", 404),
    Route("POST", "/gallery/restore-all/", "gallery", 302),
    Route("GET", "/gallery/clear/", "gallery", 200),
    Route("GET", "/gallery/usage/?groupBy=user", "gallery", 200),
    Route("GET", "/generate/", "gallery", 200),
    Route("GET", "/generate/?from={result}", "gallery", 200),
    Route("GET", "/generate/{generation}/cards/", "gallery", 200),
    Route("POST", "/generate/", "gallery", 200, {"prompt": ""}),  # the form, with its errors
    Route("POST", "/gallery/{result}/delete/", "gallery", 302),
    Route("POST", "/gallery/clear/", "gallery", 302, {"confirmation": "DELETE"}),
    Route("GET", "/admin/", "admin", 200),
    # Staff without model permissions see the admin index, not the tables (admins are
    # superusers or hold the permissions).
    Route("GET", "/admin/generations/generationresult/", "admin", 403),
    Route("GET", "/admin/generations/apitoken/", "admin", 403),
]


def path_of(route: Route, world: World, doomed: int | None = None) -> str:
    return route.path.format(
        result=world.result.pk,
        doomed=doomed or world.result.pk,
        generation=world.generation.pk,
        tag=TAG,
        share=NO_SHARE,
        token=NO_TOKEN,
    )


def request(
    client: Any, route: Route, world: World, doomed: int | None = None, **extra: Any
) -> HttpResponseBase:
    ids = {"result": world.result.pk, "generation": world.generation.pk}
    path = path_of(route, world, doomed)
    data = {k: str(v).format(**ids) for k, v in route.data.items()}
    if route.method == "GET":
        return client.get(path, **extra)
    if route.method == "HEAD":
        return client.head(path, **extra)
    if route.kind == "api":
        send = getattr(client, route.method.lower())
        body = {k: v.format(**ids) if isinstance(v, str) else v for k, v in route.data.items()}
        return send(path, data=json.dumps(body), content_type="application/json", **extra)
    return client.post(path, data=data, **extra)


def body_of(response: HttpResponseBase) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return response.content  # type: ignore[attr-defined]


def outcome(response: HttpResponseBase) -> Any:
    if response.status_code == 302:
        location = response["Location"]
        if location.startswith("/accounts/login/?next="):
            return LOGIN
        if location.startswith("/admin/login/?next="):
            return ADMIN_LOGIN
    return response.status_code


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_route_answers_every_caller_as_expected(
    route: Route, world: World, demo: Any
) -> None:
    wrong = []
    for caller, make_client in world.callers.items():
        expected = EXPECTED[route.kind][caller]
        if expected == OK:
            expected = route.ok
        doomed = stored_result().pk if "{doomed}" in route.path else None
        response = request(make_client(), route, world, doomed)
        got = outcome(response)
        if got != expected:
            wrong.append(f"{caller}: expected {expected}, got {got}")
            continue
        if route.kind != "public" and expected != route.ok:
            body = body_of(response)
            leaked = [s for s in world.secrets if s.encode() in body]
            if leaked:
                wrong.append(f"{caller}: the refusal carries {leaked}")
            if route.kind == "api" and route.method != "HEAD":
                assert list(json.loads(body)) == ["error"], body
    assert not wrong, f"{route}:\n" + "\n".join(wrong)


def test_the_table_covers_every_route_of_the_product() -> None:
    """A new URL pattern without a line in ROUTES fails here."""
    from django.urls import get_resolver

    def patterns(resolver: Any, prefix: str = "") -> list[str]:
        found = []
        for entry in resolver.url_patterns:
            text = prefix + str(entry.pattern)
            if hasattr(entry, "url_patterns"):
                if text.startswith("admin/"):
                    continue  # Django's admin: covered by its index and two of its lists
                found.extend(patterns(entry, text))
            else:
                found.append(text)
        return found

    covered = {
        route.path.split("?")[0]
        .replace("{result}", "<int:result_id>")
        .replace("{doomed}", "<int:result_id>")
        .replace("{generation}", "<int:generation_id>")
        .replace("{tag}", "<path:tag_name>")
        .replace("{share}", "<int:share_id>")
        .replace("{token}", "<str:token>")
        .lstrip("/")
        for route in ROUTES
    }
    missing = [p for p in patterns(get_resolver()) if p not in covered and p != "accounts/logout/"]
    assert not missing, f"routes without a line in the access table: {missing}"
