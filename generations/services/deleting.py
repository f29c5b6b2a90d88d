"""Deleting results and generations: the rows go in a transaction, their stored
objects once it has committed (a rolled-back delete must not lose images)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from generations.models import Generation, GenerationReference, GenerationResult
from generations.signals import announce_results_changed
from storage_backends import images as image_storage

# What a person types to clear everything: in capitals, so it is never typed by habit.
DELETE_ALL_CONFIRMATION = "DELETE"


class NotConfirmed(ValueError):
    """The confirmation word was not typed as asked."""


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
    uploads = GenerationReference.objects.filter(generation__in=generations).exclude(storage_key="")
    return _delete_with_objects(doomed=generations, results=results, uploads=uploads)


def results_delete_all(*, confirmation: str) -> int:
    """Clear every result (and its generation), once the person typed DELETE."""
    if confirmation.strip() != DELETE_ALL_CONFIRMATION:
        raise NotConfirmed(
            f"Nothing was deleted: type {DELETE_ALL_CONFIRMATION} (in capitals) to confirm."
        )
    return generations_delete(generations=Generation.objects.all())


def _delete_with_objects(
    *,
    doomed: QuerySet[Any],
    results: QuerySet[GenerationResult],
    uploads: QuerySet[GenerationReference] | None = None,
) -> int:
    with transaction.atomic():
        objects = [
            (backend, [key, thumb])
            for backend, key, thumb in results.exclude(storage_backend="")
            .values_list("storage_backend", "storage_key", "thumbnail_key")
            .iterator()
        ]
        # The reference images uploaded for a generation go with it.
        if uploads is not None:
            objects += [
                (backend, [key])
                for backend, key in uploads.values_list("storage_backend", "storage_key")
            ]
        _total, per_model = doomed.delete()

        def delete_objects() -> None:
            for backend, keys in objects:
                image_storage.delete_objects(backend=backend, keys=keys)

        transaction.on_commit(delete_objects)
        announce_results_changed()
    return per_model.get(GenerationResult._meta.label, 0)
