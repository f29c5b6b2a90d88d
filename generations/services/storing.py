"""Storing: make one result's image safe in storage we own, in four steps.

1. **claim** the row with one conditional update, so two workers never store it twice;
2. **fetch and check**: fetch the external URL safely to a temporary file (streamed and
   hashed) and check, without decoding a pixel, that it is a whole image within our
   limits;
3. **write** the object at a key made from the id;
4. **record** it `stored`, again conditionally on the claim, and queue its derivatives.

This is the safe stage, a few milliseconds of CPU an image, so that a backlog near its
deadline is stored at the rate the machine copies bytes. The full decode that proves
the image whole and the thumbnail come after, on a queue of their own
(`generations.services.derivatives`).

Every failure keeps the external URL and records the error; an attempt that did not
record what it wrote removes it, unless its lease may have run out (a newer attempt
writes the same key and may have recorded it). Queueing, re-storing and the sweep's
choice of rows live here too: they decide when the stages run.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from generations.fetch import FetchedFile, FetchError, ImageExpired, fetch_to_file
from generations.imaging import ImageInfo, ImageRefused, check_image
from generations.models import GenerationResult
from generations.signals import announce_results_changed
from storage_backends import images as image_storage
from storage_backends.images import StorageUnavailable

logger = logging.getLogger(__name__)
S = GenerationResult.StorageStatus


class StoreOutcome(enum.Enum):
    STORED = "stored"
    FAILED = "failed"
    EXPIRED = "expired"
    RETRY = "retry"  # a transient failure; the caller may try again later
    SKIPPED = "skipped"  # not claimable: stored already, being stored, or no image


def results_enqueue_storing(*, result_ids: Iterable[int]) -> int:
    """Queue a store task per result; a broker that is down only delays storing.

    Results stay `pending` when their task cannot be queued, and the periodic sweep
    queues them again once the broker is back.
    """
    from generations.tasks import store_result_image  # tasks import services; keep the cycle lazy

    return _enqueue_each(store_result_image, result_ids=result_ids, what="storing")


def results_enqueue_derivatives(*, result_ids: Iterable[int]) -> int:
    """Queue a derivatives task per stored result; a broker that is down only delays
    its thumbnail: the sweep queues results still without one later."""
    from generations.tasks import make_result_derivatives

    return _enqueue_each(make_result_derivatives, result_ids=result_ids, what="derivatives")


def _enqueue_each(task: Any, *, result_ids: Iterable[int], what: str) -> int:
    queued = 0
    for result_id in result_ids:
        try:
            task.apply_async(args=[result_id], retry=False)
        except Exception as exc:
            # The broker is down: trying the rest would cost a connect timeout each.
            logger.warning("could not queue %s of result %s: %s", what, result_id, exc)
            break
        queued += 1
    return queued


class Restoring(NamedTuple):
    """What `results_restore` did: rows it took on, and the tasks it could queue.

    `accepted - queued` rows wait `pending` for the broker: the sweep queues them.
    """

    accepted: int
    queued: int

    @property
    def waiting(self) -> int:
        return self.accepted - self.queued


def results_restore(*, result_ids: Iterable[int]) -> Restoring:
    """Store again the results that are not stored and still can be: the one way to
    re-store, for the gallery, the admin, `restore_images` and the API.

    A `failed` result becomes `pending` before its task is queued, so that the sweep
    covers it should the broker be down; the gallery shows (and follows) it as
    waiting.
    """
    ids = list(
        GenerationResult.objects.storable()
        .filter(pk__in=list(result_ids))
        .order_by("-id")
        .values_list("pk", flat=True)
    )
    # Conditional, so a row a worker claimed meanwhile keeps its claim.
    if GenerationResult.objects.filter(pk__in=ids, storage_status=S.FAILED).update(
        storage_status=S.PENDING
    ):
        announce_results_changed()
    return Restoring(accepted=len(ids), queued=results_enqueue_storing(result_ids=ids))


# --- The four steps ------------------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    result: GenerationResult
    claim: uuid.UUID
    will_retry: bool
    # This process's clock just before the claim: how long the row is surely ours.
    claimed_at: float

    def may_be_superseded(self) -> bool:
        """Whether another attempt may have taken the row over: past half the lease, for
        the lease is judged on another host's clock against the time this one wrote."""
        return time.monotonic() - self.claimed_at > settings.STORAGE_LEASE_SECONDS / 2


@dataclass(frozen=True)
class _Checked:
    fetched: FetchedFile
    info: ImageInfo


@dataclass(frozen=True)
class _Written:
    backend: str
    key: str


class _NotStored(Exception):
    """An attempt that ends without a stored image: what the row records instead."""

    def __init__(self, status: str, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry = retry


def result_store_image(*, result_id: int, will_retry: bool = False) -> StoreOutcome:
    """Copy one result's image into our storage; see the module's docstring.

    With `will_retry`, a transient failure leaves the row `pending` and answers RETRY
    (the caller tries again later); without, it is recorded as `failed`.
    """
    attempt = _claim(result_id, will_retry=will_retry)
    if attempt is None:
        return StoreOutcome.SKIPPED
    try:
        return _keep(attempt, _fetch_and_check(attempt))
    except _NotStored as failure:
        return _record_failure(attempt, failure)


def _keep(attempt: _Attempt, checked: _Checked) -> StoreOutcome:
    """Write a checked file and record it; its temporary copy goes either way."""
    try:
        written = _write(attempt, checked)
        return _record(attempt, checked, written)
    finally:
        Path(checked.fetched.path).unlink(missing_ok=True)


def result_store_inline_image(*, result_id: int, data: bytes) -> StoreOutcome:
    """Store an image that came in Ark's answer itself (``b64_json``), through the same
    claim, checks, write and record as a fetched one.

    There is no URL to fetch it from again, so this is its only chance: the caller
    holds the bytes and calls this as soon as the row is committed.
    """
    attempt = _claim(result_id, will_retry=False)
    if attempt is None:
        return StoreOutcome.SKIPPED
    try:
        if len(data) > settings.IMAGE_FETCH_MAX_BYTES:
            raise _NotStored(
                S.FAILED,
                f"image_too_large: {len(data)} bytes, over the "
                f"{settings.IMAGE_FETCH_MAX_BYTES} accepted",
            )
        return _keep(attempt, _check(attempt, _inline_file(data)))
    except _NotStored as failure:
        lost = _NotStored(
            S.FAILED, f"{failure.message} (it came in Ark's answer: no URL to fetch it again)"
        )
        return _record_failure(attempt, lost)


def _inline_file(data: bytes) -> FetchedFile:
    """``data`` in a temporary file, as a fetch would have left it."""
    handle, name = tempfile.mkstemp(prefix="fetch-inline-", suffix=".part", dir=download_dir())
    with os.fdopen(handle, "wb") as fh:
        fh.write(data)
    return FetchedFile(
        path=Path(name),
        byte_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _claim(result_id: int, *, will_retry: bool) -> _Attempt | None:
    """Take the row for this attempt, or None when it is not ours to store."""
    claim = uuid.uuid4()
    claimed_at = time.monotonic()
    claimed = (
        GenerationResult.objects.storable()
        .filter(pk=result_id)
        .update(
            storage_status=S.STORING,
            storage_claim=claim,
            storage_claimed_at=timezone.now(),
            storage_attempts=F("storage_attempts") + 1,
        )
    )
    if not claimed:
        return None
    return _Attempt(
        result=GenerationResult.objects.get(pk=result_id),
        claim=claim,
        will_retry=will_retry,
        claimed_at=claimed_at,
    )


def _fetch_and_check(attempt: _Attempt) -> _Checked:
    """The image in a temporary file, checked to be safe to keep; raises _NotStored otherwise."""
    result = attempt.result
    if not result.external_url:
        # The image came in Ark's answer itself and was not kept then: nothing to fetch.
        raise _NotStored(
            S.FAILED,
            result.storage_error or "image_lost: it came in Ark's answer and was never stored",
        )
    expires_at = result.external_url_expires_at
    if expires_at and expires_at < timezone.now() - timedelta(minutes=1):
        # Ark's link is dead already: say so instead of asking for a certain 403.
        raise _NotStored(
            S.EXPIRED,
            f"image_expired: the external URL expired at {expires_at:%Y-%m-%d %H:%M} UTC",
        )
    try:
        fetched = fetch_to_file(
            result.external_url,
            dest_dir=download_dir(),
            max_bytes=settings.IMAGE_FETCH_MAX_BYTES,
            allowed_hosts=settings.IMAGE_FETCH_ALLOWED_HOSTS,
            connect_timeout=settings.IMAGE_FETCH_CONNECT_TIMEOUT,
            total_timeout=settings.IMAGE_FETCH_TOTAL_TIMEOUT,
        )
    except FetchError as exc:
        raise _fetch_failure(exc, will_retry=attempt.will_retry) from exc
    return _check(attempt, fetched)


def _check(attempt: _Attempt, fetched: FetchedFile) -> _Checked:
    """The file checked as an image within our limits; it is removed when it is not one."""
    try:
        info = check_image(fetched.path, max_pixels=settings.IMAGE_FETCH_MAX_PIXELS)
    except BaseException as exc:
        Path(fetched.path).unlink(missing_ok=True)
        if isinstance(exc, ImageRefused):
            raise _fetch_failure(exc, will_retry=attempt.will_retry) from exc
        raise
    return _Checked(fetched=fetched, info=info)


def _fetch_failure(exc: FetchError | ImageRefused, *, will_retry: bool) -> _NotStored:
    message = f"{exc.code}: {exc}"
    if isinstance(exc, ImageExpired):
        return _NotStored(S.EXPIRED, message)
    if exc.transient and will_retry:
        return _NotStored(S.PENDING, message, retry=True)
    return _NotStored(S.FAILED, message)


def _write(attempt: _Attempt, checked: _Checked) -> _Written:
    """Write the image; on any failure, nothing is left behind."""
    backend = image_storage.active_backend()
    written = _Written(
        backend=backend,
        key=image_storage.image_key(result_id=attempt.result.pk, extension=checked.info.extension),
    )
    try:
        image_storage.save_object_from_path(
            backend=backend, key=written.key, path=checked.fetched.path
        )
    except StorageUnavailable as exc:
        _forget(attempt, written)
        status = S.PENDING if attempt.will_retry else S.FAILED
        raise _NotStored(status, str(exc), retry=attempt.will_retry) from exc
    except BaseException:
        # A bug mid-write surfaces as itself, but leaves no object its row does not record.
        _forget(attempt, written)
        raise
    return written


def _record(attempt: _Attempt, checked: _Checked, written: _Written) -> StoreOutcome:
    """Say `stored`, if the claim is still ours, and queue the derivatives; else leave
    the row to the newer attempt."""
    result = attempt.result
    try:
        recorded = GenerationResult.objects.filter(
            pk=result.pk, storage_claim=attempt.claim, storage_status=S.STORING
        ).update(
            storage_status=S.STORED,
            storage_backend=written.backend,
            storage_key=written.key,
            thumbnail_key="",  # made by the derivatives stage
            content_type=checked.info.content_type,
            byte_size=checked.fetched.byte_size,
            sha256=checked.fetched.sha256,
            width=checked.info.width,
            height=checked.info.height,
            stored_at=timezone.now(),
            storage_error="",
            storage_claim=None,
            image_url=result.stable_url,
        )
    except BaseException:
        # The row could not be updated: remove what we wrote so no object is left
        # without its row. The claim's lease runs out and the sweep tries again.
        _forget(attempt, written)
        raise
    if not recorded:
        # The lease ran out and another attempt took over. It writes the same keys;
        # leave the row, and the objects, to it.
        logger.warning(
            "result %s: claim lost before recording; leaving it to the newer attempt", result.pk
        )
        return StoreOutcome.SKIPPED
    announce_results_changed()
    transaction.on_commit(lambda: results_enqueue_derivatives(result_ids=[result.pk]))
    return StoreOutcome.STORED


def _forget(attempt: _Attempt, written: _Written) -> None:
    """Remove what a failed attempt wrote, unless its lease may have run out.

    A newer attempt writes the same key and may have recorded it already (a worker
    stuck, or cut off the network, past its lease): deleting it then would lose the
    image its row points at. Left in place, the object is that row's, or the next
    attempt at this row writes it again and records it.
    """
    if attempt.may_be_superseded():
        logger.warning(
            "result %s: leaving %s in place; a newer attempt may have recorded it",
            attempt.result.pk,
            written.key,
        )
        return
    image_storage.delete_objects(backend=written.backend, keys=[written.key])


def _record_failure(attempt: _Attempt, failure: _NotStored) -> StoreOutcome:
    """Record an attempt that stored nothing; `image_url` keeps the external URL."""
    GenerationResult.objects.filter(
        pk=attempt.result.pk, storage_claim=attempt.claim, storage_status=S.STORING
    ).mark_not_stored(status=failure.status, error=failure.message)
    announce_results_changed()
    logger.info("result %s not stored (%s): %s", attempt.result.pk, failure.status, failure.message)
    if failure.retry:
        return StoreOutcome.RETRY
    return StoreOutcome.EXPIRED if failure.status == S.EXPIRED else StoreOutcome.FAILED


# --- Housekeeping --------------------------------------------------------------------


def download_dir() -> Path:
    """Where images are copied to be checked; the sweep cleans up after a killed worker."""
    path = Path(settings.IMAGE_FETCH_TEMP_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def downloads_abandoned_delete() -> int:
    """Delete partial downloads (`fetch-*.part`) older than the lease: their worker died
    mid-fetch, or mid-decode of a stored image.

    A live attempt finishes or gives up within the task's time limit, which is
    shorter than the lease, so an older file has no one left to delete it.
    """
    directory = Path(settings.IMAGE_FETCH_TEMP_DIR)
    if not directory.is_dir():
        return 0
    cutoff = time.time() - max(settings.STORAGE_LEASE_SECONDS, settings.CELERY_TASK_TIME_LIMIT)
    deleted = 0
    for path in directory.glob("fetch-*.part"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:
            continue  # its own attempt finished in the meantime
    return deleted


def results_due_for_storing(*, limit: int = 500) -> list[int]:
    """Ids the sweep should queue again: left `pending`, or `storing` past the lease.

    The ones whose external URL expires soonest come first: the deadline decides
    what is at risk. Rows newer than `STORAGE_SWEEP_SETTLE_SECONDS` (a minute) are
    left to their own task.
    """
    S = GenerationResult.StorageStatus
    cutoff = timezone.now() - timedelta(seconds=settings.STORAGE_SWEEP_SETTLE_SECONDS)
    queryset = (
        GenerationResult.objects.storable()
        .exclude(storage_status=S.FAILED)
        .filter(created_at__lt=cutoff)
        .deadline_first()
    )
    return list(queryset.values_list("pk", flat=True)[:limit])


def results_due_for_derivatives(*, limit: int = 500) -> list[int]:
    """Stored results still without a thumbnail long after they were stored: their
    derivatives task was never queued (the broker was down) or its worker died.

    A task finishes or gives up within the task time limit; waiting as long again
    leaves a backlog being worked through alone, and a task queued twice finds the
    thumbnail made and does nothing.
    """
    grace = max(settings.STORAGE_LEASE_SECONDS, settings.CELERY_TASK_TIME_LIMIT)
    cutoff = timezone.now() - timedelta(seconds=grace)
    queryset = GenerationResult.objects.awaiting_derivatives().filter(stored_at__lt=cutoff)
    return list(queryset.order_by("stored_at").values_list("pk", flat=True)[:limit])
