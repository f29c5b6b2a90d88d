"""The operations on the router: results listed, read, deleted and re-stored; a
generation polled; the tags."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.http import HttpRequest
from ninja import Query, Router, Status

from generations.checks import parse_id
from generations.filters import API_FILTER_FIELDS, InvalidFilter, api_filters
from generations.models import Generation, GenerationResult, ImageModel, Tag
from generations.selectors import results_filtered, results_page
from generations.services.deleting import results_delete
from generations.services.storing import results_restore

from .auth import ApiError
from .schemas import ERRORS, GenerationOut, ResultFilters, ResultOut, ResultPage, TagList
from .views import generation_json, result_json

router = Router()


def _result_id_or_404(result_id: int) -> int:
    """The id when a row could have it: the database refuses to compare one above its
    bigint (SQLite with an error), and no result has it anyway."""
    if parse_id(result_id) is None:
        raise ApiError(404, "not_found", f"no result with id {result_id}")
    return result_id


def _result_or_404(result_id: int) -> GenerationResult:
    result = (
        GenerationResult.objects.select_related("model")
        .prefetch_related("tags")
        .filter(pk=_result_id_or_404(result_id))
        .first()
    )
    if result is None:
        raise ApiError(404, "not_found", f"no result with id {result_id}")
    return result


@router.get(
    "/results", tags=["results"], response={200: ResultPage, **ERRORS}, operation_id="listResults"
)
def list_results(request: HttpRequest, filters: Query[ResultFilters]) -> dict[str, Any]:
    """Results newest first, narrowed by the filters, a page at a time: follow `next`
    as `cursor` until it is null. Results made during the walk are not in its later
    pages (they are newer than its cursor); none is repeated or skipped."""
    before = None
    if filters.cursor is not None:
        before = parse_id(filters.cursor)
        if before is None:
            raise ApiError(400, "invalid", "cursor must be the next of an earlier page", "cursor")
    try:
        wanted = api_filters(
            filters.model_dump(include=set(API_FILTER_FIELDS)),
            models=list(ImageModel.objects.all()),
        )
    except InvalidFilter as exc:
        raise ApiError(400, "invalid", exc.message, exc.field) from None
    page = results_page(
        results_filtered(filters=wanted),
        before=before,
        after=None,
        per_page=filters.limit,
    )
    return {
        "results": [result_json(request, result) for result in page.results],
        "next": str(page.older_before) if page.older_before is not None else None,
    }


@router.get(
    "/results/{int:result_id}",
    tags=["results"],
    response={200: ResultOut, **ERRORS},
    operation_id="getResult",
)
def get_result(request: HttpRequest, result_id: int) -> dict[str, Any]:
    """One result."""
    return result_json(request, _result_or_404(result_id))


@router.delete(
    "/results/{int:result_id}",
    tags=["results"],
    response={204: None, **ERRORS},
    operation_id="deleteResult",
)
def delete_result(request: HttpRequest, result_id: int) -> Status:
    """Delete the result; its stored image and thumbnail go once the deletion is
    committed. Nothing comes back."""
    if not results_delete(result_ids=[_result_id_or_404(result_id)]):
        raise ApiError(404, "not_found", f"no result with id {result_id}")
    return Status(204, None)


@router.post(
    "/results/{int:result_id}/restore",
    tags=["results"],
    response={200: ResultOut, 202: ResultOut, 409: ERRORS[400], **ERRORS},
    operation_id="restoreResult",
)
def restore_result(request: HttpRequest, result_id: int) -> Status:
    """Store the result's image again, from its upstream URL while that lives: 202 with
    the result, now waiting to be stored (a moment later, once a worker takes it); 200
    when it is stored already; 409 when its image cannot come back."""
    result = _result_or_404(result_id)
    if result.is_stored:
        return Status(200, result_json(request, result))
    if result.is_lost or result.status != GenerationResult.Status.SUCCESS:
        raise ApiError(
            409, "not_restorable", f"result {result_id} has no image that could be stored"
        )
    # Accepted or not (a worker may be storing it right now), it is on its way; what the
    # broker could not take the sweep queues.
    results_restore(result_ids=[result_id])
    return Status(202, result_json(request, _result_or_404(result_id)))


@router.get(
    "/generations/{int:generation_id}",
    tags=["generations"],
    response={200: GenerationOut, **ERRORS},
    operation_id="getGeneration",
    url_name="generation",
)
def get_generation(request: HttpRequest, generation_id: int) -> dict[str, Any]:
    """A generation with its results, to poll until every result has its storage
    status (`generate` with `"wait": false` answers its URL as Location)."""
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is None:
        raise ApiError(404, "not_found", f"no generation with id {generation_id}")
    return generation_json(request, generation)


@router.get("/tags", tags=["tags"], response={200: TagList, **ERRORS}, operation_id="listTags")
def list_tags(request: HttpRequest) -> dict[str, Any]:
    """Every tag by name, with how many results carry it."""
    counted = Tag.objects.annotate(n=Count("result_links")).order_by("key")
    return {"tags": [{"name": name, "count": n} for name, n in counted.values_list("name", "n")]}
