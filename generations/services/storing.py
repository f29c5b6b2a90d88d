"""Multi-step writes of the generations domain.

`generation_create` calls the models upstream (concurrently) and records what they
answered; `result_store_image` copies one result's image into storage we own;
the delete services remove rows and, after commit, their objects.
"""

from __future__ import annotations

import base64
import enum
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from generations.fetch import (
    FetchError,
    ImageExpired,
    fetch_to_file,
    inspect_and_thumbnail,
)
from generations.models import Generation, GenerationResult, ImageModel, Prompt
from generations.upstream.ark import (
    UpstreamError,
    UpstreamImage,
    UpstreamItem,
    client_for,
    external_url_expiry,
)
from storage_backends import images as image_storage
from storage_backends.images import StorageUnavailable

logger = logging.getLogger(__name__)

# Keys of ImageModel.default_params that describe the model instead of being sent.
_NON_REQUEST_PARAMS = {"capabilities", "size"}
# Ark accepts reference images up to 10 MB; a data: URI is a third larger.
_MAX_REFERENCE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class ReferenceImage:
    """A reference image for image-to-image: a URL, or one of our stored results."""

    url: str = ""
    result: GenerationResult | None = None


@dataclass
class _ModelCall:
    model: ImageModel
    size: str
    params: dict[str, Any]
    items: list[UpstreamItem] = field(default_factory=list)


def generation_create(
    *,
    user: User | AnonymousUser | None,
    models: Sequence[ImageModel],
    prompt_text: str = "",
    prompt: Prompt | None = None,
    size: str = "",
    params: dict[str, Any] | None = None,
    reference: ReferenceImage | None = None,
) -> Generation:
    """Call every model concurrently, then record the generation and its results.

    The upstream calls happen outside any transaction; the rows are written in one
    transaction, and storing their images is queued after it commits, so the
    caller never waits for storage.
    """
    text = prompt.text if prompt is not None and not prompt_text else prompt_text
    params = dict(params or {})
    upstream_image = _reference_for_upstream(reference) if reference else None

    calls = [
        _ModelCall(
            model=m,
            size=size or m.default_params.get("size", ""),
            params=_effective_params(m, params),
        )
        for m in models
    ]

    def call_model(call: _ModelCall) -> list[UpstreamItem]:
        try:
            return client_for(call.model).generate(
                model_id=call.model.upstream_model_id,
                prompt=text,
                size=call.size or None,
                params=call.params,
                image=upstream_image,
                capabilities=call.model.capabilities,
            )
        except Exception as exc:  # a bug upstream of us must not lose the other results
            logger.exception("model %s call crashed", call.model)
            return [UpstreamError(code="InternalError", message=f"{type(exc).__name__}: {exc}")]

    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        for call, items in zip(calls, pool.map(call_model, calls), strict=True):
            call.items = items or [
                UpstreamError(code="EmptyResponse", message="the model returned no image")
            ]

    now = timezone.now()
    with transaction.atomic():
        generation = Generation.objects.create(
            prompt=prompt,
            prompt_text=text,
            size=size,
            params=params,
            reference_image_url=reference.url if reference else "",
            reference_result=reference.result if reference else None,
            created_by=user if isinstance(user, User) else None,
            created_at=now,
        )
        results = []
        for call in calls:
            for index, item in enumerate(call.items):
                results.append(
                    _result_row(generation=generation, call=call, index=index, item=item, now=now)
                )
        GenerationResult.objects.bulk_create(results)
        stored_ids = [r.pk for r in results if r.status == GenerationResult.Status.SUCCESS]
        transaction.on_commit(lambda: results_enqueue_storing(result_ids=stored_ids))
    return generation


def _effective_params(model: ImageModel, params: dict[str, Any]) -> dict[str, Any]:
    effective = {k: v for k, v in model.default_params.items() if k not in _NON_REQUEST_PARAMS}
    effective.update(params)
    return effective


def _result_row(
    *, generation: Generation, call: _ModelCall, index: int, item: UpstreamItem, now: Any
) -> GenerationResult:
    params_used = {**call.params, "size": call.size} if call.size else dict(call.params)
    row = GenerationResult(
        generation=generation,
        model=call.model,
        upstream_model_id=call.model.upstream_model_id,
        image_index=index,
        params_used=params_used,
        created_at=now,
    )
    if isinstance(item, UpstreamImage):
        row.status = GenerationResult.Status.SUCCESS
        row.external_url = item.url
        row.image_url = item.url
        row.external_url_expires_at = item.expires_at or external_url_expiry(item.url)
        row.storage_status = GenerationResult.StorageStatus.PENDING
        if item.size:
            row.params_used["outputSize"] = item.size
    else:
        row.status = GenerationResult.Status.FAILED
        row.error_code = item.code[:200]
        row.error_message = item.message
        row.storage_status = GenerationResult.StorageStatus.NONE
    return row


def _reference_for_upstream(reference: ReferenceImage) -> str:
    """What Ark is given for a reference image: a URL it can reach, or a data: URI."""
    result = reference.result
    if result is None:
        return reference.url
    if result.is_stored:
        direct = image_storage.redirect_url(backend=result.storage_backend, key=result.storage_key)
        if direct:
            return direct
        if result.byte_size and result.byte_size <= _MAX_REFERENCE_BYTES:
            with image_storage.open_object(
                backend=result.storage_backend, key=result.storage_key
            ) as fh:
                encoded = base64.b64encode(fh.read()).decode()
            return f"data:{result.content_type};base64,{encoded}"
    return result.external_url


# --- Keeping the bytes -----------------------------------------------------------


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

    queued = 0
    for result_id in result_ids:
        try:
            store_result_image.apply_async(args=[result_id], retry=False)
        except Exception as exc:
            # The broker is down: trying the rest would cost a connect timeout each.
            logger.warning("could not queue storing of result %s: %s", result_id, exc)
            break
        queued += 1
    return queued


def result_store_image(*, result_id: int, will_retry: bool = False) -> StoreOutcome:
    """Copy one result's image into our storage (SPEC section 7).

    Claim the row with one conditional update, fetch the external URL safely to a
    temporary file, check it is a real image, write the object (and its thumbnail)
    at keys made from the id, then record it, again conditionally on the claim.
    Every failure keeps the external URL and records the error.
    """
    S = GenerationResult.StorageStatus
    claim = uuid.uuid4()
    now = timezone.now()
    claimed = (
        GenerationResult.objects.storable()
        .filter(pk=result_id)
        .update(
            storage_status=S.STORING,
            storage_claim=claim,
            storage_claimed_at=now,
            storage_attempts=F("storage_attempts") + 1,
        )
    )
    if not claimed:
        return StoreOutcome.SKIPPED
    result = GenerationResult.objects.get(pk=result_id)

    expires_at = result.external_url_expires_at
    if expires_at and expires_at < now - timedelta(minutes=1):
        # Ark's link is dead already: say so instead of asking for a certain 403.
        return _record_failure(
            result=result,
            claim=claim,
            status=S.EXPIRED,
            message=f"image_expired: the external URL expired at {expires_at:%Y-%m-%d %H:%M} UTC",
        )

    backend = image_storage.active_backend()
    try:
        fetched = fetch_to_file(
            result.external_url,
            dest_dir=_download_dir(),
            max_bytes=settings.IMAGE_FETCH_MAX_BYTES,
            allowed_hosts=settings.IMAGE_FETCH_ALLOWED_HOSTS,
            connect_timeout=settings.IMAGE_FETCH_CONNECT_TIMEOUT,
            total_timeout=settings.IMAGE_FETCH_TOTAL_TIMEOUT,
        )
    except FetchError as exc:
        return _record_fetch_failure(result=result, claim=claim, exc=exc, will_retry=will_retry)

    key = thumb_key = ""
    try:
        try:
            info, thumbnail = inspect_and_thumbnail(
                fetched.path, max_pixels=settings.IMAGE_FETCH_MAX_PIXELS
            )
        except FetchError as exc:
            return _record_fetch_failure(result=result, claim=claim, exc=exc, will_retry=will_retry)
        key = image_storage.image_key(result_id=result.pk, extension=info.extension)
        thumb_key = image_storage.thumbnail_key(result_id=result.pk)
        image_storage.save_object_from_path(backend=backend, key=key, path=fetched.path)
        image_storage.save_object_bytes(backend=backend, key=thumb_key, data=thumbnail)
    except StorageUnavailable as exc:
        image_storage.delete_objects(backend=backend, keys=[key, thumb_key])
        status = S.PENDING if will_retry else S.FAILED
        return _record_failure(
            result=result, claim=claim, status=status, message=str(exc), retry=will_retry
        )
    except Exception:
        # A bug mid-write surfaces as itself, but leaves no object its row does not record.
        image_storage.delete_objects(backend=backend, keys=[key, thumb_key])
        raise
    finally:
        Path(fetched.path).unlink(missing_ok=True)

    try:
        recorded = GenerationResult.objects.filter(
            pk=result.pk, storage_claim=claim, storage_status=S.STORING
        ).update(
            storage_status=S.STORED,
            storage_backend=backend,
            storage_key=key,
            thumbnail_key=thumb_key,
            content_type=info.content_type,
            byte_size=fetched.byte_size,
            sha256=fetched.sha256,
            width=info.width,
            height=info.height,
            stored_at=timezone.now(),
            storage_error="",
            storage_claim=None,
            image_url=result.stable_url,
        )
    except Exception:
        # The row could not be updated: remove what we wrote so no object is left
        # without its row. The claim's lease runs out and the sweep tries again.
        image_storage.delete_objects(backend=backend, keys=[key, thumb_key])
        raise
    if not recorded:
        # Our claim was lost (the lease ran out and another attempt took over). The
        # other attempt writes the same keys; leave the row to it.
        logger.warning(
            "result %s: claim lost before recording; leaving it to the newer attempt", result.pk
        )
        return StoreOutcome.SKIPPED
    return StoreOutcome.STORED


def _record_fetch_failure(
    *, result: GenerationResult, claim: uuid.UUID, exc: FetchError, will_retry: bool
) -> StoreOutcome:
    S = GenerationResult.StorageStatus
    if isinstance(exc, ImageExpired):
        return _record_failure(
            result=result, claim=claim, status=S.EXPIRED, message=_fetch_message(exc)
        )
    if exc.transient and will_retry:
        return _record_failure(
            result=result, claim=claim, status=S.PENDING, message=_fetch_message(exc), retry=True
        )
    return _record_failure(result=result, claim=claim, status=S.FAILED, message=_fetch_message(exc))


def _fetch_message(exc: FetchError) -> str:
    return f"{exc.code}: {exc}"


def _record_failure(
    *,
    result: GenerationResult,
    claim: uuid.UUID,
    status: str,
    message: str,
    retry: bool = False,
) -> StoreOutcome:
    """Record a failed attempt; `image_url` keeps the external URL."""
    S = GenerationResult.StorageStatus
    GenerationResult.objects.filter(
        pk=result.pk, storage_claim=claim, storage_status=S.STORING
    ).mark_not_stored(status=status, error=message)
    logger.info("result %s not stored (%s): %s", result.pk, status, message)
    if retry:
        return StoreOutcome.RETRY
    return StoreOutcome.EXPIRED if status == S.EXPIRED else StoreOutcome.FAILED


def _download_dir() -> Path:
    path = Path(settings.IMAGE_FETCH_TEMP_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def downloads_abandoned_delete() -> int:
    """Delete partial downloads older than the lease: their worker died mid-fetch.

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


def results_due_for_storing(*, limit: int = 500, settle_seconds: int = 60) -> list[int]:
    """Ids the sweep should queue again: left `pending`, or `storing` past the lease.

    The ones whose external URL expires soonest come first: the deadline decides
    what is at risk. Rows created in the last minute are left to their own task.
    """
    S = GenerationResult.StorageStatus
    cutoff = timezone.now() - timedelta(seconds=settle_seconds)
    queryset = (
        GenerationResult.objects.storable()
        .exclude(storage_status=S.FAILED)
        .filter(created_at__lt=cutoff)
        .deadline_first()
    )
    return list(queryset.values_list("pk", flat=True)[:limit])


def results_delete(*, result_ids: Iterable[int]) -> int:
    """Delete results; their objects go once the deletion has committed.

    `result_ids` may be a list or a values_list queryset (then it stays a subquery,
    however many rows it names).
    """
    results = GenerationResult.objects.filter(pk__in=result_ids)
    return _delete_with_objects(doomed=results, results=results)


def generations_delete(*, generations: QuerySet[Generation]) -> int:
    """Delete generations with their results; the results' objects go after commit.

    Deleting a generation cascades to its results in the database, which knows
    nothing of storage: this is the way to delete one without leaving its images
    behind. Returns how many results went.
    """
    results = GenerationResult.objects.filter(generation__in=generations)
    return _delete_with_objects(doomed=generations, results=results)


def _delete_with_objects(*, doomed: QuerySet[Any], results: QuerySet[GenerationResult]) -> int:
    with transaction.atomic():
        objects = [
            (backend, [key, thumb])
            for backend, key, thumb in results.exclude(storage_backend="")
            .values_list("storage_backend", "storage_key", "thumbnail_key")
            .iterator()
        ]
        _total, per_model = doomed.delete()

        def delete_objects() -> None:
            for backend, keys in objects:
                image_storage.delete_objects(backend=backend, keys=keys)

        transaction.on_commit(delete_objects)
    return per_model.get(GenerationResult._meta.label, 0)


def results_delete_all(*, confirmation: str) -> int:
    """Clear every result (and its generation), after the user typed the word."""
    if confirmation.strip().lower() != "delete":
        raise ValueError("type DELETE to confirm")
    return generations_delete(generations=Generation.objects.all())


def results_restore(*, result_ids: Iterable[int]) -> int:
    """Queue storing for results that are not stored (and can still be)."""
    S = GenerationResult.StorageStatus
    ids = list(
        GenerationResult.objects.storable()
        .filter(pk__in=list(result_ids))
        .values_list("pk", flat=True)
    )
    # A failed result queued again is pending: the gallery shows (and follows) it as
    # waiting, and the sweep re-queues it should the broker be down. Conditional, so a
    # row a worker claimed meanwhile keeps its claim.
    GenerationResult.objects.filter(pk__in=ids, storage_status=S.FAILED).update(
        storage_status=S.PENDING
    )
    return results_enqueue_storing(result_ids=ids)
