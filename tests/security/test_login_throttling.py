"""Password guessing: after 5 wrong passwords a user's login is locked, even with the
right one, and the lockout says nothing about whether the user exists.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = [pytest.mark.security, pytest.mark.django_db]


def attempt(client: Client, username: str, password: str) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_the_sixth_try_is_refused_even_with_the_right_password(
    settings: Any, staff_user: Any, plain_user: Any
) -> None:
    settings.AXES_ENABLED = True
    assert settings.AXES_FAILURE_LIMIT == 5
    client = Client()
    statuses = [attempt(client, "staff", f"guess-{n}").status_code for n in range(5)]
    # The form again, with its error; the fifth failure reaches the limit and locks.
    assert statuses == [200, 200, 200, 200, 429]

    locked = attempt(client, "staff", "staff-pass-123")
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert b"staff-pass-123" not in locked.content

    # The same answer for a user who does not exist: the lockout tells nothing.
    for n in range(5):
        attempt(client, "nobody-here", f"guess-{n}")
    unknown = attempt(client, "nobody-here", "staff-pass-123")
    assert unknown.status_code == locked.status_code
    assert unknown.content == locked.content
    assert b"nobody-here" not in unknown.content and b"staff" not in locked.content.lower()

    # Locked per user and address: another user on the same address still gets in.
    assert attempt(client, "visitor", "visitor-pass-123").status_code == 302


def test_without_throttling_the_right_password_would_have_worked(
    settings: Any, staff_user: Any
) -> None:
    """The control: it is axes that refuses above, not the test's own guesses."""
    settings.AXES_ENABLED = False
    client = Client()
    for n in range(5):
        attempt(client, "staff", f"guess-{n}")
    assert attempt(client, "staff", "staff-pass-123").status_code == 302
