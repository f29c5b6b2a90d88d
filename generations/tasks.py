"""Celery tasks: store one result's image, make its derivatives, and sweep up results left
unstored or without their derivatives.

Tasks take primary keys and call one service; they own only the retry policy. Storing
runs on the default queue, derivatives on their own (`config.celery.route_task`), so
that a backlog of thumbnails never holds up making images safe.
"""

from __future__ import annotations

import random

from celery import shared_task
from django.conf import settings

from . import heartbeat  # noqa: F401 - connects the workers' heartbeat to Celery's signals
from .services.derivatives import DerivativesOutcome, result_make_derivatives
from .services.storing import (
    StoreOutcome,
    downloads_abandoned_delete,
    result_store_image,
    results_due_for_derivatives,
    results_due_for_storing,
    results_enqueue_derivatives,
    results_enqueue_storing,
)


def _backoff(retries: int) -> int:
    """5 s, 10 s, 20 s... capped at 5 minutes, with jitter so retries spread out."""
    return int(min(300, 5 * 2**retries) * random.uniform(0.8, 1.2))


@shared_task(bind=True, max_retries=settings.STORAGE_MAX_ATTEMPTS - 1, acks_late=True)
def store_result_image(self, result_id: int) -> str:  # type: ignore[no-untyped-def]
    will_retry = self.request.retries < self.max_retries
    outcome = result_store_image(result_id=result_id, will_retry=will_retry)
    if outcome is StoreOutcome.RETRY:
        raise self.retry(countdown=_backoff(self.request.retries))
    return outcome.value


@shared_task(bind=True, max_retries=settings.STORAGE_MAX_ATTEMPTS - 1, acks_late=True)
def make_result_derivatives(self, result_id: int) -> str:  # type: ignore[no-untyped-def]
    outcome = result_make_derivatives(result_id=result_id)
    if outcome is DerivativesOutcome.RETRY and self.request.retries < self.max_retries:
        # Past the last try the sweep queues it again later: the image itself is safe.
        raise self.retry(countdown=_backoff(self.request.retries))
    return outcome.value


@shared_task
def sweep_unstored_images() -> int:
    """Queue again what a down broker or a dead worker left behind: results not stored,
    deadline first, then stored ones still without their derivatives. Returns how many
    store tasks it queued."""
    downloads_abandoned_delete()
    queued = results_enqueue_storing(result_ids=results_due_for_storing())
    results_enqueue_derivatives(result_ids=results_due_for_derivatives())
    return queued
