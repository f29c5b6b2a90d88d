"""What queueing the storing costs `/api/generate`, a child of run.py.

`POST /api/generate` through Django's test Client in this process, against the demo
upstream, with a Bearer token. "Storing enabled" is the product as it is: after the
rows commit, `transaction.on_commit` queues one task per result on Redis (a queue of
this run that no worker consumes, purged at the end). "Storing disabled" is the same
call path with `generations.services.storing.results_enqueue_storing` replaced, in this
process only, by a function that queues nothing: no product switch exists for it, on
purpose. The two alternate, call by call, so that drift on a shared machine hits both.

Usage: python -m bench.generate --calls 25 --size 1K
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable

from bench.common import django_setup, median, report


def _queue_nothing(*, result_ids: Iterable[int]) -> int:
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--size", default="1K")
    args = parser.parse_args()
    django_setup()
    import redis
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    from generations.models import ApiToken, GenerationResult
    from generations.services import generate as services  # where the service looks it up

    user = User.objects.create_user(username="bench-generate", password="x", is_staff=True)
    key = ApiToken.new_key()
    ApiToken.objects.create(user=user, prefix=key[:10], key_hash=ApiToken.hash_key(key))
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {key}")
    product_enqueue = services.results_enqueue_storing

    def call(number: int) -> float:
        body = {
            "prompt": f"a lighthouse at dawn, bench call {number}",
            "modelIds": ["doubao-seedream-4-0-250828"],
            "size": args.size,
        }
        started = time.perf_counter()
        response = client.post("/api/generate", json.dumps(body), content_type="application/json")
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.content[:300]
        assert response.json()["results"][0]["status"] == "SUCCESS", response.content[:300]
        return elapsed

    samples: dict[str, list[float]] = {"enabled": [], "disabled": []}
    try:
        for number in range(3):  # warm: imports, connections, the broker's channel
            call(number)
        for number in range(args.calls):
            for mode in ("enabled", "disabled") if number % 2 else ("disabled", "enabled"):
                services.results_enqueue_storing = (
                    product_enqueue if mode == "enabled" else _queue_nothing
                )
                samples[mode].append(call(number))
    finally:
        services.results_enqueue_storing = product_enqueue
        queue = settings.CELERY_TASK_DEFAULT_QUEUE
        client_redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        queued = client_redis.llen(queue)
        client_redis.delete(queue, f"_kombu.binding.{queue}")
    pending = GenerationResult.objects.filter(
        storage_status=GenerationResult.StorageStatus.PENDING
    ).count()
    report(
        {
            "samples": samples,
            "medians": {mode: median(values) for mode, values in samples.items()},
            "queued_tasks": queued,
            "pending_results": pending,
            "calls": args.calls,
            "size": args.size,
        }
    )


if __name__ == "__main__":
    main()
