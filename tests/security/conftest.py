"""Fixtures of the security suite: a world with data worth stealing, every kind of caller,
and a guard that records (and refuses) every outbound connection this process tries.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from generations.models import ApiToken, GenerationResult
from tests.factories import GenerationFactory, GenerationResultFactory, mark_stored
from tests.faults.processes import RedisServer, celery_broker, redis_flushall

# Markers planted in the data: no refusal may carry any of them.
SECRET_PROMPT = "SECRET-PROMPT-7f3a a lighthouse"
SECRET_URL_PART = "SECRET-URL-c91d"


@pytest.fixture(autouse=True)
def own_broker(private_redis: RedisServer) -> Iterator[RedisServer]:
    """Whatever a route queues goes to our own Redis, never the machine's shared one."""
    private_redis.start()
    redis_flushall(private_redis.port)
    with celery_broker(private_redis.url):
        yield private_redis


@dataclass
class ConnectionGuard:
    """Every connect() this process attempted, by (host, port); non-loopback ones refused."""

    attempts: list[tuple[str, int]]

    def since(self, mark: int, *, ignore_ports: tuple[int, ...] = ()) -> list[tuple[str, int]]:
        return [a for a in self.attempts[mark:] if a[1] not in ignore_ports]


_LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.", "localhost")


@pytest.fixture(autouse=True)
def connection_guard(monkeypatch: pytest.MonkeyPatch) -> ConnectionGuard:
    guard = ConnectionGuard(attempts=[])
    real_connect = socket.socket.connect

    def guarded_connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple):
            host, port = str(address[0]), int(address[1])
            guard.attempts.append((host, port))
            if not host.startswith(_LOOPBACK_PREFIXES):
                raise OSError(f"test guard: refused to connect to {host}:{port}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    return guard


@dataclass
class World:
    """Data worth stealing, and every kind of caller."""

    generation: Any
    result: Any
    callers: dict[str, Callable[[], Client]]
    secrets: tuple[str, ...]


def stored_result(*, prompt: str = SECRET_PROMPT) -> GenerationResult:
    """A result stored on local disk, with its thumbnail, as the store task leaves it."""
    generation = GenerationFactory(prompt_text=prompt)
    result = GenerationResultFactory(
        generation=generation,
        external_url=f"https://images.example.test/{SECRET_URL_PART}.jpeg",
    )
    return mark_stored(result, backend="local")


def make_token(user: Any, *, revoked: bool = False) -> str:
    key = ApiToken.new_key()
    ApiToken.objects.create(
        user=user,
        prefix=key[:10],
        key_hash=ApiToken.hash_key(key),
        revoked_at=timezone.now() if revoked else None,
    )
    return key


@pytest.fixture
def world(db: Any, staff_user: Any, plain_user: Any, api_token: str) -> World:
    result = stored_result()
    revoked = make_token(staff_user, revoked=True)
    non_staff_token = make_token(plain_user)

    def session(user: Any) -> Callable[[], Client]:
        def make() -> Client:
            client = Client()
            client.force_login(user)
            return client

        return make

    def bearer(key: str) -> Callable[[], Client]:
        return lambda: Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    callers = {
        "anonymous": Client,
        "non_staff_session": session(plain_user),
        "wrong_token": bearer("gv_" + "x" * 43),
        "revoked_token": bearer(revoked),
        "non_staff_token": bearer(non_staff_token),
        # The callers that get in run last: some routes change what the others see.
        "valid_token": bearer(api_token),
        "staff_session": session(staff_user),
    }
    return World(
        generation=result.generation,
        result=result,
        callers=callers,
        secrets=(
            "SECRET-PROMPT",
            SECRET_URL_PART,
            result.sha256,
            result.storage_key,
            api_token,
            revoked,
            non_staff_token,
            "staff-pass-123",
        ),
    )
