"""System checks (`manage.py check`) about where images are kept."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def broker_reachable_from_other_hosts(url: str) -> bool:
    """Whether workers on other machines could take tasks from this broker: a network
    broker (Redis, RabbitMQ) on an address that is not loopback."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "amqp", "amqps", "pyamqp", "librabbitmq"}:
        return False  # filesystem, memory: this machine's alone
    host = (parts.hostname or "localhost").lower()
    if host in LOOPBACK_NAMES:
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name other hosts may resolve too


@checks.register(checks.Tags.compatibility)
def local_storage_with_a_shared_broker(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    broker = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if settings.STORAGE_MODE != "local" or not broker_reachable_from_other_hosts(broker):
        return []
    host = urlsplit(broker).hostname
    return [
        checks.Warning(
            f"STORAGE_MODE=local with a broker other hosts can reach ({host}): a worker on "
            "another machine would write images to its own disk, where this web process "
            "cannot serve them.",
            hint="Use STORAGE_MODE=s3 when workers run on more than one machine, or keep "
            "every worker on this one with the broker on a loopback address.",
            id="storage_backends.W001",
        )
    ]
