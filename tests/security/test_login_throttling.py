"""Password guessing: after 5 wrong passwords a user's login is locked, even with the
right one, and the lockout says nothing about whether the user exists.

Behind a trusted reverse proxy the lockout lands on the client's forwarded address,
not on the proxy's (which would lock the user out for everyone behind it); from
anyone else X-Forwarded-For is ignored, so no client can choose its own address.
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


PROXY = "10.0.0.1"


def through_proxy(client_address: str, *, forwarded_for: str | None = None) -> Client:
    """A browser behind our reverse proxy: the proxy connects, and appends the client."""
    chain = f"{forwarded_for}, {client_address}" if forwarded_for else client_address
    return Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=chain)


@pytest.mark.parametrize(
    ("attacker", "victim"),
    [("203.0.113.5", "198.51.100.7"), ("2001:db8::bad", "2001:db8::1")],
)
def test_behind_a_trusted_proxy_one_address_guessing_does_not_lock_out_another(
    settings: Any, staff_user: Any, attacker: str, victim: str
) -> None:
    settings.AXES_ENABLED = True
    settings.TRUSTED_PROXIES = [PROXY]
    guesser = through_proxy(attacker)
    statuses = [attempt(guesser, "staff", f"guess-{n}").status_code for n in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    assert attempt(guesser, "staff", "staff-pass-123").status_code == 429

    # The real user behind the same proxy, from another address, still gets in.
    assert attempt(through_proxy(victim), "staff", "staff-pass-123").status_code == 302


def test_a_client_behind_the_proxy_cannot_pin_its_guesses_on_someone_else(
    settings: Any, staff_user: Any
) -> None:
    """Whatever the client writes into X-Forwarded-For stays left of what the proxy added."""
    settings.AXES_ENABLED = True
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    victim = "198.51.100.7"
    guesser = through_proxy("203.0.113.5", forwarded_for=victim)
    for n in range(5):
        attempt(guesser, "staff", f"guess-{n}")
    assert attempt(guesser, "staff", "staff-pass-123").status_code == 429

    assert attempt(through_proxy(victim), "staff", "staff-pass-123").status_code == 302


@pytest.mark.parametrize("trusted", [[], [PROXY]], ids=["no-proxy-configured", "not-the-proxy"])
def test_a_direct_client_cannot_escape_a_lockout_with_a_fresh_forwarded_address(
    settings: Any, staff_user: Any, trusted: list[str]
) -> None:
    settings.AXES_ENABLED = True
    settings.TRUSTED_PROXIES = trusted
    for n in range(5):
        client = Client(REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR=f"192.0.2.{n + 1}")
        attempt(client, "staff", f"guess-{n}")

    fresh = Client(REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert attempt(fresh, "staff", "staff-pass-123").status_code == 429
