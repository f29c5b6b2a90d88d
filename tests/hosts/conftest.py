"""Fixtures of the hosts suite: a network of test hosts, and genvault spread over it.

Making network namespaces needs root and iproute2; without them the suite skips,
saying why (and fails on CI, where GENVAULT_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.hosts.netns import Network, namespaces_unavailable
from tests.hosts.services import Deployment, postgres_unavailable, rabbitmq_unavailable

LEASE_SECONDS = 4


@pytest.fixture
def namespaces() -> None:
    """Skip (fail on CI) where this process cannot make network namespaces."""
    why_not = namespaces_unavailable()
    require_service(why_not is None, why_not or "")


@pytest.fixture
def network(namespaces: None) -> Iterator[Network]:
    """An empty network of the test's own; every host on it is gone after the test."""
    network = Network()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, network: Network, tmp_path: Path
) -> Iterator[Deployment]:
    """genvault on five hosts (services, upstream, web, worker-1, worker-2), no worker
    started yet: each test starts the ones it needs. On Redis, or on RabbitMQ for a
    test parametrized with `@pytest.mark.parametrize("deployment", [...], indirect=True)`."""
    broker = getattr(request, "param", "redis")
    why_not = postgres_unavailable() or (rabbitmq_unavailable() if broker == "rabbitmq" else None)
    require_service(why_not is None, why_not or "")
    deployment = Deployment(network, tmp_path, lease_seconds=LEASE_SECONDS, broker=broker)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.close()
