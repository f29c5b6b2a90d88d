"""Generating: call the selected models upstream and record what they answered.

The upstream calls run concurrently and outside any transaction; the rows are
written in one transaction, and storing their images is queued once it commits, so
the person generating never waits for storage.

A generation asked for in the background is recorded as running and its calls are
queued for a worker (`generation_run_queued`). While a generation runs, the process
calling the models holds a lease on it and renews it; a generation whose process died
is marked interrupted when its lease runs out (`generations_mark_interrupted`), keeping
every image received before.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from generations.models import Generation, GenerationResult, ImageModel, Prompt
from generations.services.references import (
    ReferenceImage,
    generation_references_record,
    kept_reference,
    references_for_upstream,
)
from generations.services.storing import result_store_inline_image, results_enqueue_storing
from generations.signals import announce_results_changed
from generations.upstream.ark import (
    UpstreamAnswer,
    UpstreamError,
    UpstreamImage,
    UpstreamInlineImage,
    UpstreamItem,
    UpstreamUsage,
    client_for,
    external_url_expiry,
)

logger = logging.getLogger(__name__)

# Keys of ImageModel.default_params that describe the model instead of being sent.
_NON_REQUEST_PARAMS = {"capabilities", "size"}


@dataclass
class _ModelCall:
    model: ImageModel
    size: str
    params: dict[str, Any]
    streams: bool
    answer: UpstreamAnswer | None = None
    recorded: int = 0  # result rows written so far


# What a model call's thread hands the recording thread: one item, or None when done.
_Event = tuple[_ModelCall, UpstreamItem | None]


def generation_create(
    *,
    user: User | AnonymousUser | None,
    models: Sequence[ImageModel],
    prompt_text: str = "",
    prompt: Prompt | None = None,
    save_as: str = "",
    size: str = "",
    sizes: Mapping[int, str] | None = None,
    params: dict[str, Any] | None = None,
    references: Sequence[ReferenceImage] = (),
    background: bool = False,
) -> Generation:
    """Record the generation, call every model concurrently, and record what each answered.

    `prompt` is a saved prompt to use; `save_as`, a title under which to save the typed
    text as a new one (in the same transaction as the generation, so a failure leaves
    neither). The upstream calls happen outside any transaction. A model that streams
    has each image's row committed, and its storing queued, the moment its event
    arrives, so a group that takes minutes loses nothing already made whatever happens
    later; the other models' results are recorded once every call is over, in the
    order the models were asked for. The caller never waits for storage, except for an
    image that came in the answer itself, whose bytes exist nowhere else.
    `sizes` gives a model (by primary key) a size of its own instead of `size`; the
    sizes were checked against each model's rules by the caller (`generations.inputs`).
    `references` are the reference images, in order, kept with the generation.

    With `background`, the generation is recorded as running and returned at once, its
    calls queued for a worker, which reads the references back from what was kept;
    when the queue refuses the task, nothing was asked of Ark and the generation is
    returned interrupted.
    """
    text = prompt.text if prompt is not None and not prompt_text else prompt_text
    params = dict(params or {})
    # The first URL or stored result is also the generation's own reference, as before
    # a generation could have several (the gallery's reference filter reads it).
    first = next((r for r in references if r.data is None), None)
    # Read before anything is recorded: a stored reference that cannot be read stops
    # the generation here, with nothing asked of Ark.
    upstream_image = None if background else references_for_upstream(references)

    with transaction.atomic():
        if prompt is None and save_as:
            prompt = Prompt.objects.create(text=text, title=save_as)
        generation = Generation.objects.create(
            prompt=prompt,
            prompt_text=text,
            size=size,
            params=params,
            reference_image_url=first.url if first else "",
            reference_result=first.result if first else None,
            created_by=user if isinstance(user, User) else None,
            created_at=timezone.now(),
            status=Generation.Status.RUNNING,
            # Queued, it waits for a worker; called here, it holds the lease from now.
            lease_expires_at=_lease_deadline(
                settings.GENERATION_QUEUE_SECONDS if background else None
            ),
            upstream_started_at=None if background else timezone.now(),
        )
        if references:  # in the transaction: a storage that refuses an upload leaves neither
            generation_references_record(generation=generation, references=references)

    if background:
        transaction.on_commit(
            lambda: _enqueue_generation(generation, models=models, sizes=sizes or {})
        )
        return generation
    _call_models(
        generation=generation,
        calls=_model_calls(models, size=size, sizes=sizes, params=params),
        text=text,
        upstream_image=upstream_image,
    )
    return generation


def _model_calls(
    models: Sequence[ImageModel],
    *,
    size: str,
    sizes: Mapping[int, str] | None,
    params: dict[str, Any],
) -> list[_ModelCall]:
    return [
        _ModelCall(
            model=m,
            size=(sizes or {}).get(m.pk) or size or m.default_params.get("size", ""),
            params=_effective_params(m, params),
            streams=m.streams,
        )
        for m in models
    ]


def _call_models(
    *,
    generation: Generation,
    calls: list[_ModelCall],
    text: str,
    upstream_image: str | list[str] | None,
) -> None:
    """Call every model concurrently, record what each answered, and mark the generation
    done; the lease is renewed all along, so that only a dead process loses it."""
    lease = _Lease(generation.pk)
    # Only this thread writes rows: the calls' threads hand their items over.
    events: queue.SimpleQueue[_Event] = queue.SimpleQueue()

    def call_model(call: _ModelCall) -> None:
        def on_item(item: UpstreamItem) -> None:
            events.put((call, item))

        try:
            call.answer = client_for(call.model).generate_answer(
                model_id=call.model.upstream_model_id,
                prompt=text,
                size=call.size or None,
                params=call.params,
                image=upstream_image,
                capabilities=call.model.capabilities,
                stream=call.streams,
                on_item=on_item if call.streams else None,
            )
        except Exception as exc:  # a bug upstream of us must not lose the other results
            logger.exception("model %s call crashed", call.model)
            error = UpstreamError(code="InternalError", message=f"{type(exc).__name__}: {exc}")
            if call.streams:
                events.put((call, error))
            call.answer = UpstreamAnswer(items=[error])
        finally:
            events.put((call, None))

    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        for call in calls:
            pool.submit(call_model, call)
        running = len(calls)
        while running:
            try:
                call, item = events.get(timeout=lease.renew_every)
            except queue.Empty:
                lease.renew_if_due()
                continue
            if item is None:
                running -= 1
            else:
                _record(generation=generation, call=call, items=[item])
            lease.renew_if_due()

    for call in calls:
        if not call.streams and call.answer is not None:
            _record(generation=generation, call=call, items=call.answer.items)
        if not call.recorded:
            empty = UpstreamError(code="EmptyResponse", message="the model returned no image")
            _record(generation=generation, call=call, items=[empty])
    _record_usage(generation, [call.answer.usage for call in calls if call.answer])
    _finish(generation)


def generation_run_queued(
    *, generation_id: int, model_ids: Sequence[int], sizes: Mapping[int, str]
) -> str:
    """Call the models of a background generation, unless this is not the delivery
    that may: returns "done", "interrupted" or "finished" (there was nothing to do).

    Ark bills a call whether or not its answer reaches us, so a generation's models are
    asked once at most. The claim (one conditional UPDATE of `upstream_started_at`)
    lets one delivery of the task call them; the broker delivers the task again only
    when the delivery that claimed it was lost with its worker (the task is acked
    late so that a generation never begun survives a worker's death), and that
    delivery marks the generation interrupted instead of asking again: the images the
    dead worker recorded are kept and stored, those it did not receive are gone.
    """
    now = timezone.now()
    claimed = Generation.objects.filter(
        pk=generation_id,
        status=Generation.Status.RUNNING,
        upstream_started_at=None,
        lease_expires_at__gte=now,  # not given up while it waited in the queue
    ).update(upstream_started_at=now, lease_expires_at=_lease_deadline())
    if not claimed:
        if _interrupt(generation_id):
            logger.warning("generation %s was begun by a lost worker: interrupted", generation_id)
            return Generation.Status.INTERRUPTED.value
        return "finished"

    generation = Generation.objects.get(pk=generation_id)
    try:
        found = ImageModel.objects.in_bulk(list(model_ids))
        models = [found[pk] for pk in model_ids if pk in found]
        kept = generation.references.select_related("result").order_by("position")
        _call_models(
            generation=generation,
            calls=_model_calls(
                models, size=generation.size, sizes=sizes, params=dict(generation.params)
            ),
            text=generation.prompt_text,
            upstream_image=references_for_upstream([kept_reference(r) for r in kept]),
        )
    except Exception:
        # What was recorded stays; the generation says it went no further.
        _interrupt(generation.pk)
        raise
    return generation.status


def generations_mark_interrupted() -> int:
    """Mark interrupted the generations whose lease ran out: their process died mid-call
    (or their task waited in the queue too long to be worth calling). Their results
    are kept, and stored as any others. Returns how many were marked."""
    return Generation.objects.lease_expired().update(
        status=Generation.Status.INTERRUPTED, lease_expires_at=None
    )


def _lease_deadline(seconds: int | None = None) -> datetime:
    return timezone.now() + timedelta(seconds=seconds or settings.GENERATION_LEASE_SECONDS)


class _Lease:
    """A running generation's lease, renewed every quarter of its length while the
    process calling the models lives: between events as well as on them, since Ark
    may take minutes before a group's first image."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id
        self.renew_every = settings.GENERATION_LEASE_SECONDS / 4
        self._renewed = time.monotonic()

    def renew_if_due(self) -> None:
        if time.monotonic() - self._renewed < self.renew_every:
            return
        Generation.objects.filter(pk=self.generation_id, status=Generation.Status.RUNNING).update(
            lease_expires_at=_lease_deadline()
        )
        self._renewed = time.monotonic()


def _finish(generation: Generation) -> None:
    """Mark the generation done, unless the sweep found it interrupted first."""
    Generation.objects.filter(pk=generation.pk, status=Generation.Status.RUNNING).update(
        status=Generation.Status.DONE, lease_expires_at=None
    )
    generation.refresh_from_db(fields=["status", "lease_expires_at"])


def _interrupt(generation_id: int) -> int:
    return Generation.objects.filter(pk=generation_id, status=Generation.Status.RUNNING).update(
        status=Generation.Status.INTERRUPTED, lease_expires_at=None
    )


def _enqueue_generation(
    generation: Generation, *, models: Sequence[ImageModel], sizes: Mapping[int, str]
) -> None:
    """Queue a background generation's calls; a queue that refuses leaves it interrupted
    (nothing was asked of Ark), which the caller tells the person who asked."""
    from generations.tasks import generate_in_background  # tasks import services

    try:
        generate_in_background.apply_async(
            kwargs={
                "generation_id": generation.pk,
                "model_ids": [m.pk for m in models],
                # JSON keys are strings: the task reads them back as model ids.
                "sizes": {str(pk): size for pk, size in sizes.items()},
            },
            retry=False,
        )
    except Exception as exc:
        logger.warning("could not queue generation %s: %s", generation.pk, exc)
        _interrupt(generation.pk)
        generation.refresh_from_db(fields=["status", "lease_expires_at"])


def _record(*, generation: Generation, call: _ModelCall, items: list[UpstreamItem]) -> None:
    """Commit the rows of ``items`` now and queue their storing once they are committed."""
    now = timezone.now()
    rows: list[GenerationResult] = []
    inline: list[tuple[GenerationResult, bytes]] = []
    for item in items:
        row = _result_row(generation=generation, call=call, index=call.recorded, item=item, now=now)
        call.recorded += 1
        rows.append(row)
        if isinstance(item, UpstreamInlineImage):
            inline.append((row, item.data))
    with transaction.atomic():
        GenerationResult.objects.bulk_create(rows)
        fetched_ids = [r.pk for r in rows if r.external_url]
        if fetched_ids:
            transaction.on_commit(lambda: results_enqueue_storing(result_ids=fetched_ids))
        announce_results_changed()
    for row, data in inline:
        _store_inline(row, data)


def _record_usage(generation: Generation, usages: list[UpstreamUsage | None]) -> None:
    """What Ark counted for the generation, summed over its calls; None where none said."""
    counted = [u for u in usages if u is not None]
    images = [u.generated_images for u in counted if u.generated_images is not None]
    tokens = [u.output_tokens for u in counted if u.output_tokens is not None]
    generation.usage_generated_images = sum(images) if images else None
    generation.usage_output_tokens = sum(tokens) if tokens else None
    if images or tokens:
        Generation.objects.filter(pk=generation.pk).update(
            usage_generated_images=generation.usage_generated_images,
            usage_output_tokens=generation.usage_output_tokens,
        )


def _store_inline(row: GenerationResult, data: bytes) -> None:
    """Store an image that came in the answer, now: its bytes exist nowhere else."""
    try:
        result_store_inline_image(result_id=row.pk, data=data)
    except Exception:
        # The generation is recorded whatever storing does; the sweep finds the row.
        logger.exception("storing the inline image of result %s crashed", row.pk)


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
    if isinstance(item, UpstreamInlineImage):
        row.status = GenerationResult.Status.SUCCESS
        row.storage_status = GenerationResult.StorageStatus.PENDING
        if item.size:
            row.params_used["outputSize"] = item.size
    elif isinstance(item, UpstreamImage):
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
