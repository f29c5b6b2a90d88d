"""Share links through the JSON API: make, list and revoke, in the shapes clients read."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from generations.models import Share
from generations.services.organize import results_add_tags
from tests.factories import GenerationResultFactory, mark_stored

pytestmark = pytest.mark.django_db


def post(client: Client, body: Any) -> Any:
    return client.post("/api/shares", data=json.dumps(body), content_type="application/json")


def test_make_list_and_revoke(token_client: Client) -> None:
    result = mark_stored(GenerationResultFactory())
    response = post(token_client, {"resultId": result.pk, "expiresIn": 3600})
    assert response.status_code == 201
    made = response.json()
    share = Share.objects.get()
    assert made["id"] == share.pk
    assert made["url"] == f"http://testserver{share.path}"
    expires = parse_datetime(made["expiresAt"])
    assert expires is not None
    assert abs(expires - (timezone.now() + timedelta(hours=1))) < timedelta(seconds=30)
    assert Client().get(made["url"]).status_code == 200

    listed = token_client.get("/api/shares").json()["shares"]
    assert [(s["id"], s["resultIds"], s["active"], s["createdBy"]) for s in listed] == [
        (share.pk, [result.pk], True, "staff")
    ]

    revoked = token_client.delete(f"/api/shares/{share.pk}")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False and revoked.json()["revokedAt"]
    assert Client().get(made["url"]).status_code == 404
    assert token_client.delete("/api/shares/999999").status_code == 404


def test_a_tag_share_and_what_bad_input_gets(token_client: Client) -> None:
    result = mark_stored(GenerationResultFactory())
    results_add_tags(result_ids=[result.pk], names=["Night sky"])
    made = post(token_client, {"tag": "night SKY"}).json()
    assert Client().get(made["url"]).status_code == 200
    assert Share.objects.get().expires_at - Share.objects.get().created_at == timedelta(days=7)

    for body, field in (
        ({}, "resultId"),
        ({"resultId": result.pk, "tag": "x"}, "resultId"),
        ({"resultId": "one"}, "resultId"),
        ({"tag": ""}, "tag"),
        ({"tag": "nowhere"}, "tag"),
        ({"resultId": result.pk, "expiresIn": 10}, "expiresIn"),
        ({"resultId": result.pk, "colour": "red"}, "colour"),
    ):
        response = post(token_client, body)
        assert response.status_code == 400, body
        assert response.json()["error"]["field"] == field, body
    assert Share.objects.count() == 1
