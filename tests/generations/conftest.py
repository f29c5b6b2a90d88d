"""Fixtures for the upstream tests: a demo upstream on a free loopback port and an Ark client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from generations.upstream.ark import ArkClient
from generations.upstream.demo.server import DemoUpstream


@pytest.fixture(scope="session")
def shared_demo_upstream() -> Iterator[DemoUpstream]:
    """One demo upstream for the session: starting one per test would only cost time."""
    server = DemoUpstream(host="127.0.0.1", port=0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def demo_upstream(shared_demo_upstream: DemoUpstream) -> DemoUpstream:
    """The shared demo upstream with an empty request log."""
    shared_demo_upstream.clear_request_log()
    return shared_demo_upstream


@pytest.fixture
def make_ark_client(demo_upstream: DemoUpstream) -> Any:
    """Build an Ark client pointed at the demo upstream, with short pauses between retries."""

    def make(**overrides: Any) -> ArkClient:
        options: dict[str, Any] = {
            "base_url": demo_upstream.api_base_url,
            "api_key": "demo",
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
            "max_retries": 2,
            "retry_backoff": 0.02,
        }
        options.update(overrides)
        return ArkClient(**options)

    return make


@pytest.fixture
def ark_client(make_ark_client: Any) -> ArkClient:
    return make_ark_client()


@pytest.fixture
def unique_prompt() -> Any:
    """Prompts unique to the test, so that per-prompt fault counters never leak between tests."""

    def make(text: str = "a lighthouse at dusk") -> str:
        return f"{text} #{uuid.uuid4().hex[:8]}"

    return make
