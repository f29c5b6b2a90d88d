"""Generating: call the selected models upstream and record what they answered.

The upstream calls run concurrently and outside any transaction; the rows are
written in one transaction, and storing their images is queued once it commits, so
the person generating never waits for storage.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from generations.models import Generation, GenerationResult, ImageModel, Prompt
from generations.services.references import (
    ReferenceImage,
    generation_references_record,
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
    """
    text = prompt.text if prompt is not None and not prompt_text else prompt_text
    params = dict(params or {})
    upstream_image = references_for_upstream(references)
    # The first URL or stored result is also the generation's own reference, as before
    # a generation could have several (the gallery's reference filter reads it).
    first = next((r for r in references if r.data is None), None)

    calls = [
        _ModelCall(
            model=m,
            size=(sizes or {}).get(m.pk) or size or m.default_params.get("size", ""),
            params=_effective_params(m, params),
            streams=m.streams,
        )
        for m in models
    ]

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
        )
        if references:  # in the transaction: a storage that refuses an upload leaves neither
            generation_references_record(generation=generation, references=references)

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
            call, item = events.get()
            if item is None:
                running -= 1
            else:
                _record(generation=generation, call=call, items=[item])

    for call in calls:
        if not call.streams and call.answer is not None:
            _record(generation=generation, call=call, items=call.answer.items)
        if not call.recorded:
            empty = UpstreamError(code="EmptyResponse", message="the model returned no image")
            _record(generation=generation, call=call, items=[empty])
    _record_usage(generation, [call.answer.usage for call in calls if call.answer])
    return generation


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
