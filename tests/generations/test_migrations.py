"""Data migrations, run forwards on rows written by the code of before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("generations", "0003_gallery_keyset_page_indexes")]
AFTER = [("generations", "0004_params_used_without_column_copies")]


def _migrate(targets: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.fixture(autouse=True)
def _latest_schema_afterwards() -> Iterator[None]:
    """The tests that follow expect every migration applied, not the one tested here."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_copies_in_params_used_are_folded_into_the_columns() -> None:
    apps = _migrate(BEFORE)
    Generation = apps.get_model("generations", "Generation")
    Result = apps.get_model("generations", "GenerationResult")
    generation = Generation.objects.create(prompt_text="a fox")
    url = "https://ark.example/a.jpeg?X-Tos-Expires=86400"
    copied = Result.objects.create(
        generation=generation,
        upstream_model_id="m",
        status="SUCCESS",
        external_url=url,
        storage_error="could not write: disk full",
        params_used={"seed": 7, "externalImageUrl": url, "storageError": "older error"},
    )
    # A row whose only record of its URL was the copy (an old bundle's import).
    only_copy = Result.objects.create(
        generation=generation,
        upstream_model_id="m",
        status="SUCCESS",
        params_used={"externalImageUrl": url, "storageError": "image_expired: gone"},
    )
    untouched = Result.objects.create(
        generation=generation, upstream_model_id="m", status="FAILED", params_used={"seed": 1}
    )

    apps = _migrate(AFTER)
    Result = apps.get_model("generations", "GenerationResult")
    copied = Result.objects.get(pk=copied.pk)
    assert copied.params_used == {"seed": 7}
    assert copied.external_url == url
    assert copied.storage_error == "could not write: disk full"  # the column wins
    only_copy = Result.objects.get(pk=only_copy.pk)
    assert only_copy.params_used == {}
    assert (only_copy.external_url, only_copy.storage_error) == (url, "image_expired: gone")
    assert Result.objects.get(pk=untouched.pk).params_used == {"seed": 1}
