"""Reads for the gallery pages: the header counts, a result's detail, shares.

Every page asks here (or `generations.selectors`, for filtered lists and their keyset
pages) for what it shows, in a fixed number of queries whatever the number of results,
so that templates never query. Nothing counts the whole table per request: the header
counts are one grouped query cached for a few seconds, and forgotten by the gallery's
own state-changing views so that a person sees the effect of what they did.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from django.db.models import Count

from generations.models import (
    GenerationResult,
    Share,
    WorkerHeartbeat,
)

S = GenerationResult.StorageStatus

# Versioned: a deploy that changes what is cached must not read the old shape.
HEADER_COUNTS_CACHE_KEY = "gallery:header-counts:v2"
# Long enough that a busy gallery counts the table a few times a minute at most; short
# enough that work done behind the gallery's back (the storing worker, the API) shows
# up soon. The gallery's own actions forget the counts at once.
HEADER_COUNTS_CACHE_SECONDS = 15


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
