"""The admin's share links: listed with what they show and their state, revoked by an
action that logs who did it."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client

from generations.models import Share
from generations.services.sharing import share_create
from tests.factories import GenerationResultFactory, mark_stored

pytestmark = pytest.mark.django_db

SHARES = "/admin/generations/share/"


def test_shares_are_listed_and_revoked_from_the_admin(
    admin_client: Client, admin_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    result = mark_stored(GenerationResultFactory())
    share = share_create(user=admin_user, result_ids=[result.pk])
    page = admin_client.get(SHARES).content.decode()
    assert f"result {result.pk}" in page and "active" in page
    assert admin_client.get(f"{SHARES}add/").status_code == 403

    with caplog.at_level(logging.INFO, logger="genvault.shares"):
        response = admin_client.post(
            SHARES, {"action": "revoke", "_selected_action": [share.pk]}, follow=True
        )
    assert "Revoked 1 share link(s)." in response.content.decode()
    share.refresh_from_db()
    assert share.revoked_at is not None and share.revoked_by == admin_user
    assert [
        r.getMessage().split(" at ")[0] for r in caplog.records if r.name == "genvault.shares"
    ] == [f"share {share.pk} revoked by admin (user {admin_user.pk})"]
    assert Client().get(share.path).status_code == 404
    assert Share.objects.count() == 1
