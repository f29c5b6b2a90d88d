"""Reads for the gallery pages: filtered result lists, one page of them, the header counts.

Every page asks here for what it shows, in a fixed number of queries whatever the
number of results, so that templates never query. Pages are cut by keyset (`id <` or
`id >` a cursor), never by OFFSET, and nothing counts the whole table per request: the
header counts are one grouped query cached for a few seconds, and forgotten by the
gallery's own state-changing views so that a person sees the effect of what they did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Count, F, Q
from django.db.models.functions import Abs
from django.utils import timezone

from generations.models import (
    GenerationResult,
    GenerationResultQuerySet,
    Share,
    Tag,
    WorkerHeartbeat,
)

S = GenerationResult.StorageStatus

# Versioned: a deploy that changes what is cached must not read the old shape.
HEADER_COUNTS_CACHE_KEY = "gallery:header-counts:v2"
# Long enough that a busy gallery counts the table a few times a minute at most; short
# enough that work done behind the gallery's back (the storing worker, the API) shows
# up soon. The gallery's own actions forget the counts at once.
HEADER_COUNTS_CACHE_SECONDS = 15


# How far a stored image's shape may be from the aspect asked and still match it: 1%
# takes 2560x1440 and 1365x768 as 16:9, and keeps 4:3 apart from 3:2.
ASPECT_TOLERANCE_PERCENT = 1
# What `results_for_gallery` names the id its pages are cut on.
PAGE_KEY = "page_key"


def results_for_gallery(*, filters: dict[str, Any]) -> GenerationResultQuerySet:
    """Results newest first, with what a card shows joined in, narrowed by the filters.

    However the filters combine, the rows come newest first by their PAGE_KEY, the id
    `gallery_page` cuts them on. The storage status, result status, model, star and tag
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
class GalleryPage:
    """One keyset page: its results (newest first) and the cursors of its neighbours."""

    results: list[GenerationResult]
    older_before: int | None  # `?before=` of the next older page, None when this is the last
    newer_after: int | None  # `?after=` of the next newer page, None when this is the newest
    is_newest: bool


def gallery_page(
    results: GenerationResultQuerySet,
    *,
    before: int | None,
    after: int | None,
    per_page: int,
) -> GalleryPage:
    """Cut one page out of `results` by id, in one query that reads `per_page + 1` rows.

    The extra row only tells whether there is more beyond the page; a page deep in
    100,000 results costs what the first one does, since the index starts at the cursor.
    The id compared is the PAGE_KEY of `results_for_gallery` when `results` has one.
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
    return GalleryPage(
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


def gallery_neighbours(results: GenerationResultQuerySet, *, result_id: int) -> Neighbours:
    """The results just newer and just older than `result_id` in `results` (whether or not
    it is one of them), in two queries that each read one row from the cursor on: the
    viewer steps across page boundaries as `gallery_page` cuts them, at any depth."""
    key = PAGE_KEY if PAGE_KEY in results.query.annotations else "id"
    ids = results.select_related(None).prefetch_related(None)
    newer = ids.filter(**{f"{key}__gt": result_id}).order_by(key).values_list("pk", flat=True)
    older = ids.filter(**{f"{key}__lt": result_id}).values_list("pk", flat=True)
    return Neighbours(newer=newer.first(), older=older.first())


def header_counts(*, fresh: bool = False) -> dict[str, int]:
    """Results in all, by storage status, by result status, and at risk; cached briefly.

    `fresh` recounts (and re-caches) for the few pages where a stale number would
    mislead, such as the confirmation of clearing everything.
    """
    if not fresh:
        cached = cache.get(HEADER_COUNTS_CACHE_KEY)
        if cached is not None:
            return dict(cached)
    counts = _count_results()
    cache.set(HEADER_COUNTS_CACHE_KEY, counts, HEADER_COUNTS_CACHE_SECONDS)
    return counts


def workers_alive() -> bool:
    """Whether any storing worker has beaten within the minute (one query, never cached: the
    header's warning must not outlive the outage by a cache's lifetime)."""
    return WorkerHeartbeat.objects.alive().storing().exists()


def forget_header_counts() -> None:
    """Called when results change (`generations.signals.results_changed`), so the next
    page recounts."""
    cache.delete(HEADER_COUNTS_CACHE_KEY)


def _count_results() -> dict[str, int]:
    """Two queries: one grouped count by (status, storage status), and the at-risk count."""
    counts = {"total": 0, "none": 0, "at_risk": 0}
    counts.update({value: 0 for value, _label in S.choices if value})
    counts.update({f"result_{value.lower()}": 0 for value in GenerationResult.Status.values})
    groups = (
        GenerationResult.objects.order_by()
        .values("status", "storage_status")
        .annotate(n=Count("id"))
        .values_list("status", "storage_status", "n")
    )
    for status, storage_status, n in groups:
        counts["total"] += n
        counts[storage_status or "none"] = counts.get(storage_status or "none", 0) + n
        counts[f"result_{status.lower()}"] = counts.get(f"result_{status.lower()}", 0) + n
    counts["at_risk"] = GenerationResult.objects.at_risk().count()
    return counts


def matching_total(*, filters: dict[str, Any], counts: dict[str, int]) -> int | None:
    """How many results the filters match, when the header counts already say it.

    Unfiltered, or narrowed by one storage status, one result status or at risk alone,
    the answer is in the counts; with a model or prompt filter it would take a count of
    its own over the table, which the index page does not pay for (None).
    """
    active = {name for name, value in filters.items() if value not in (None, "", False)}
    if not active:
        return counts["total"]
    if active == {"storage_status"}:
        return counts.get(filters["storage_status"])
    if active == {"status"}:
        return counts.get(f"result_{str(filters['status']).lower()}")
    if active == {"at_risk"}:
        return counts["at_risk"]
    return None


def result_for_detail(*, result_id: int) -> GenerationResult | None:
    return (
        GenerationResult.objects.select_related("generation", "generation__prompt", "model")
        .prefetch_related("tags")
        .filter(pk=result_id)
        .first()
    )


def shared_results(*, share: Share) -> list[GenerationResult]:
    """The stored results a share shows, newest first, with their prompts and models (one
    query)."""
    return list(
        share.results.filter(storage_status=S.STORED)
        .select_related("generation", "model")
        .order_by("-id")
    )


def shared_result(*, share: Share, result_id: int) -> GenerationResult | None:
    """One stored result of the share, with what serving its bytes reads; None when the
    share does not hold it."""
    return (
        share.results.filter(pk=result_id, storage_status=S.STORED)
        .select_related("generation")
        .only(
            "storage_status",
            "storage_backend",
            "storage_key",
            "content_type",
            "byte_size",
            "generation__prompt_text",
        )
        .first()
    )


def shares_for_gallery() -> list[Share]:
    """Every share, newest first, with who made it and its results (three queries)."""
    return list(Share.objects.select_related("created_by").prefetch_related("results"))
