"""create_api_token and ensure_admin: what an operator sees and gets."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from generations.models import ApiToken

pytestmark = pytest.mark.django_db


def test_create_api_token_prints_a_working_token_alone_on_the_last_line(staff_user: Any) -> None:
    out = io.StringIO()
    call_command("create_api_token", "staff", stdout=out, stderr=io.StringIO())
    token = out.getvalue().strip().splitlines()[-1]
    assert token.startswith("gv_") and " " not in token
    assert ApiToken.objects.get().key_hash == ApiToken.hash_key(token)
    response = Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/generations/1")
    assert response.status_code == 404  # authenticated; there is just no such generation


def test_create_api_token_refuses_unknown_and_non_staff_users(plain_user: Any) -> None:
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        call_command("create_api_token", "ghost")
    with pytest.raises(CommandError, match="staff"):
        call_command("create_api_token", "visitor")
    assert not ApiToken.objects.exists()


def test_ensure_admin_prints_the_password_only_the_first_time(client: Client) -> None:
    first = io.StringIO()
    call_command("ensure_admin", stdout=first)
    password = first.getvalue().split("password: ", 1)[1].split()[0]
    assert client.login(username="admin", password=password)
    second = io.StringIO()
    call_command("ensure_admin", stdout=second)
    assert second.getvalue() == ""
