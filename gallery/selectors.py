"""Reads for the gallery pages: filtered result lists and the header counts.

Every page asks here for what it shows, in a fixed number of queries whatever the
number of results, so that templates never query.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from generations.models import GenerationResult

S = GenerationResult.StorageStatus


def results_for_gallery(*, filters: dict[str, Any]) -> Any:
    """Results newest first, with what a card shows joined in, narrowed by the filters."""
    results = GenerationResult.objects.select_related("generation", "model").order_by("-id")
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
        results = results.filter(generation__prompt_text__icontains=filters["q"])
    return results


def storage_counts() -> dict[str, int]:
    """How many results are in each storage status, and in all: one aggregate query."""
    aggregates = {
        "total": Count("id"),
        **{
            (value or "none"): Count("id", filter=Q(storage_status=value))
            for value, _label in S.choices
        },
    }
    return GenerationResult.objects.aggregate(**aggregates)


def at_risk_count() -> int:
    return GenerationResult.objects.at_risk().count()


def result_for_detail(*, result_id: int) -> GenerationResult | None:
    return (
        GenerationResult.objects.select_related("generation", "generation__prompt", "model")
        .filter(pk=result_id)
        .first()
    )
