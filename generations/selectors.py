"""Reads of results by filter: the filtered list, newest first, and one keyset page of it,
for the gallery's index, downloads and the API's listing.

Pages are cut by keyset (`id <` or `id >` a cursor), never by OFFSET, so that a page
deep in the list costs what the first one does, and results made meanwhile never shift
a walk through the pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import F, Q
from django.db.models.functions import Abs
from django.utils import timezone

from generations.models import GenerationResult, GenerationResultQuerySet, Tag

S = GenerationResult.StorageStatus

# How far a stored image's shape may be from the aspect asked and still match it: 1%
# takes 2560x1440 and 1365x768 as 16:9, and keeps 4:3 apart from 3:2.
ASPECT_TOLERANCE_PERCENT = 1
# What `results_filtered` names the id its pages are cut on.
PAGE_KEY = "page_key"


def results_filtered(*, filters: dict[str, Any]) -> GenerationResultQuerySet:
    """Results newest first, with what a card shows joined in, narrowed by the filters.

    However the filters combine, the rows come newest first by their PAGE_KEY, the id
    `results_page` cuts them on. The storage status, result status, model, star and tag
    filters each have an index that starts at a cursor; the prompt text has a trigram
    index on PostgreSQL. The others (dates, size, aspect, seed, reference) are checked
    on the rows as the page reads them newest first, until it has its fill.
    """
    results = GenerationResult.objects.select_related("generation", "model").prefetch_related(
        "tags"
    )
    page_key = F("id")
    if filters.get("at_risk"):
        results = results.at_risk()
    storage_status = filters.get("storage_status") or ""
    if storage_status == "none":
        results = results.filter(storage_status=S.NONE)
    elif storage_status:
        results = results.filter(storage_status=storage_status)
    if filters.get("status"):
        results = results.filter(status=filters["status"])
    if filters.get("model") is not None:
        results = results.filter(model_id=filters["model"])
    if filters.get("q"):
        # On PostgreSQL, Django writes this UPPER("prompt_text"::text) LIKE UPPER(...):
        # the trigram index of migration 0006 is on that very expression.
        results = results.filter(generation__prompt_text__icontains=filters["q"])
    if filters.get("favorite"):
        results = results.filter(favorite=True)
    if filters.get("tag"):
        # The tag's id is looked up first (one query by its unique key) and the page
        # cut on the result id as the links hold it: the database then knows how common
        # the tag is, and reads a rare tag's links from their (tag, result) index, from
        # the cursor on, in order. (A join on the tag's name, or a cursor on the results'
        # own id, would have it read or sort every link of the tag newer than the cursor,
        # each page; the id as a subquery leaves it guessing how common the tag is.)
        tag_id = Tag.objects.named(filters["tag"]).values_list("pk", flat=True).first()
        if tag_id is None:
            return results.none()
        results = results.filter(tag_links__tag_id=tag_id)
        page_key = F("tag_links__result_id")
    if isinstance(filters.get("since"), date):
        results = results.filter(created_at__gte=_day_start(filters["since"]))
    if isinstance(filters.get("until"), date) and filters["until"] < date.max:
        results = results.filter(created_at__lt=_day_start(filters["until"] + timedelta(days=1)))
    if filters.get("size"):
        width, height = filters["size"]
        results = results.filter(width=width, height=height)
    if filters.get("aspect"):
        results = _with_aspect(results, *filters["aspect"])
    if filters.get("seed") is not None:
        results = results.filter(params_used__seed=filters["seed"])
    reference = filters.get("reference")
    if reference in ("with", "without"):
        # A reference is a stored result or a URL the generation was given. A generation
        # whose reference result was deleted since keeps no record of having had one.
        has_reference = Q(generation__reference_result__isnull=False) | ~Q(
            generation__reference_image_url=""
        )
        results = results.filter(has_reference if reference == "with" else ~has_reference)
    return results.alias(**{PAGE_KEY: page_key}).order_by(f"-{PAGE_KEY}")


def _day_start(day: date) -> datetime:
    """Midnight starting `day` in the site's time zone, the one the gallery shows."""
    return timezone.make_aware(datetime.combine(day, time.min))


def _with_aspect(
    results: GenerationResultQuerySet, across: int, down: int
) -> GenerationResultQuerySet:
    """Results whose stored image is `across`:`down`, within ASPECT_TOLERANCE_PERCENT.

    The simplest honest reading of "aspect": the stored image's own width and height
    (a result not stored has none, and matches no aspect), compared by cross products
    in whole numbers, |width x down - height x across| <= 1% of height x across, so that
    no float rounds a 16:9 of 1365x768 away.
    """
    return results.alias(
        aspect_gap=Abs(F("width") * down - F("height") * across) * 100,
        aspect_span=F("height") * across * ASPECT_TOLERANCE_PERCENT,
    ).filter(width__gt=0, height__gt=0, aspect_gap__lte=F("aspect_span"))


@dataclass(frozen=True)
class ResultsPage:
    """One keyset page: its results (newest first) and the cursors of its neighbours."""

    results: list[GenerationResult]
    older_before: int | None  # `?before=` of the next older page, None when this is the last
    newer_after: int | None  # `?after=` of the next newer page, None when this is the newest
    is_newest: bool


def results_page(
    results: GenerationResultQuerySet,
    *,
    before: int | None,
    after: int | None,
    per_page: int,
) -> ResultsPage:
    """Cut one page out of `results` by id, in one query that reads `per_page + 1` rows.

    The extra row only tells whether there is more beyond the page; a page deep in
    100,000 results costs what the first one does, since the index starts at the cursor.
    The id compared is the PAGE_KEY of `results_filtered` when `results` has one.
    """
    key = PAGE_KEY if PAGE_KEY in results.query.annotations else "id"
    if after is not None:
        rows = list(results.filter(**{f"{key}__gt": after}).order_by(key)[: per_page + 1])
        more_newer = len(rows) > per_page
        page = rows[:per_page][::-1]
        # The page we came from (holding `after`) is older than this one.
        has_older = bool(page)
        has_newer = more_newer
    else:
        if before is not None:
            results = results.filter(**{f"{key}__lt": before})
        rows = list(results[: per_page + 1])
        page = rows[:per_page]
        has_older = len(rows) > per_page
        has_newer = before is not None
    return ResultsPage(
        results=page,
        older_before=page[-1].pk if has_older and page else None,
        newer_after=page[0].pk if has_newer and page else None,
        is_newest=not has_newer,
    )


@dataclass(frozen=True)
class Neighbours:
    """The ids either side of a result in a filtered list, newest first: None at an end."""

    newer: int | None
    older: int | None


def results_neighbours(results: GenerationResultQuerySet, *, result_id: int) -> Neighbours:
    """The results just newer and just older than `result_id` in `results` (whether or not
    it is one of them), in two queries that each read one row from the cursor on: the
    viewer steps across page boundaries as `results_page` cuts them, at any depth."""
    key = PAGE_KEY if PAGE_KEY in results.query.annotations else "id"
    ids = results.select_related(None).prefetch_related(None)
    newer = ids.filter(**{f"{key}__gt": result_id}).order_by(key).values_list("pk", flat=True)
    older = ids.filter(**{f"{key}__lt": result_id}).values_list("pk", flat=True)
    return Neighbours(newer=newer.first(), older=older.first())
