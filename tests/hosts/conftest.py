"""Fixtures of the hosts suite: a network of test hosts of the test's own.

Making network namespaces needs root and iproute2; without them the suite skips,
saying why (and fails on CI, where GENVAULT_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_service
from tests.hosts.netns import Network, namespaces_unavailable


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
