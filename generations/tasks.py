"""Celery tasks: store one result's image, make its derivatives, call the models of a
background generation, and sweep up results left unstored or without their derivatives
and generations whose process died.

Tasks take primary keys and call one service; they own only the retry policy. Storing
runs on the default queue, derivatives and background generations on their own
(`config.celery.route_task`), so that neither a backlog of thumbnails nor a group that
takes minutes ever holds up making images safe.
"""

from __future__ import annotations

import random

from celery import shared_task
from django.conf import settings

from . import heartbeat  # noqa: F401 - connects the workers' heartbeat to Celery's signals
from .services.derivatives import DerivativesOutcome, result_make_derivatives
from .services.generate import generation_run_queued, generations_mark_interrupted
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


# Never retried, and acked only once it ends: a worker that dies before beginning hands
# the generation to another, while one that dies mid-call leaves a claim that makes the
# redelivered task mark the generation interrupted instead of asking Ark (and being
# billed) twice (`generation_run_queued`). Its time limit is its own: a group takes
# minutes. No soft limit before the hard one: an exception raised mid-call would stop
# the recording of images that are still arriving, and billed; the hard limit ends the
# process, and the lease then marks the generation interrupted with what it received.
@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.GENERATION_TASK_TIME_LIMIT,
    soft_time_limit=settings.GENERATION_TASK_TIME_LIMIT,
)
def generate_in_background(generation_id: int, model_ids: list[int], sizes: dict[str, str]) -> str:
    return generation_run_queued(
        generation_id=generation_id,
        model_ids=model_ids,
        sizes={int(pk): size for pk, size in sizes.items()},
    )


@shared_task
def sweep_interrupted_generations() -> int:
    """Mark interrupted the generations whose process died: their lease ran out."""
    return generations_mark_interrupted()
