"""Fault 4: the database refuses the final update after the object was written.

A trigger (SQLite or PostgreSQL) raises on the update that would mark the row
`stored`. The attempt removes what it wrote; once the trigger is gone and the lease
has run out, the next attempt writes the same key again. No orphan remains.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection

from generations.models import GenerationResult, ImageModel
from generations.services.derivatives import DerivativesOutcome, result_make_derivatives
from generations.services.generate import generation_create
from generations.services.storing import StoreOutcome, result_store_image
from tests.conftest import ensure_seedream_models
from tests.faults.helpers import S, image_fetches
from tests.faults.invariants import assert_no_image_lost, local_objects, upstream_bytes

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

TABLE = GenerationResult._meta.db_table
REFUSAL = "refused by the fault suite"


def _create_trigger() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION genvault_refuse_stored() RETURNS trigger AS $$ "
                f"BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER genvault_refuse_stored BEFORE UPDATE ON {TABLE} "
                "FOR EACH ROW WHEN (NEW.storage_status = 'stored') "
                "EXECUTE FUNCTION genvault_refuse_stored()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER genvault_refuse_stored BEFORE UPDATE ON {TABLE} "
                "WHEN NEW.storage_status = 'stored' "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            )


def _drop_trigger() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"DROP TRIGGER IF EXISTS genvault_refuse_stored ON {TABLE}")
            cursor.execute("DROP FUNCTION IF EXISTS genvault_refuse_stored()")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS genvault_refuse_stored")


@pytest.fixture
def refusing_database() -> Iterator[None]:
    _create_trigger()
    try:
        yield
    finally:
        _drop_trigger()


def test_a_refused_final_update_leaves_no_orphan_and_the_next_attempt_stores(
    demo: Any, broker: Any, settings: Any, image_storage_root: Path, refusing_database: None
) -> None:
    ensure_seedream_models()
    model = ImageModel.objects.get(upstream_model_id="doubao-seedream-4-0-250828")
    generation = generation_create(
        user=None, models=[model], prompt_text="a fox the database refuses", size="1280x720"
    )
    result = generation.results.get()

    with pytest.raises(DatabaseError, match=REFUSAL):
        result_store_image(result_id=result.pk)

    result.refresh_from_db()
    assert result.storage_status == S.STORING  # the claim stands until its lease runs out
    assert result.image_url == result.external_url
    assert local_objects(image_storage_root) == {}, "the refused attempt left an orphan"

    _drop_trigger()
    settings.STORAGE_LEASE_SECONDS = 1
    time.sleep(1.2)
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED

    result.refresh_from_db()
    assert result.storage_attempts == 2
    assert result.storage_key == f"generations/{result.pk}.jpg"  # the same key, again
    assert len(image_fetches(demo)) == 2
    # No worker here: the derivatives stage runs in this process too.
    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.MADE
    objects = local_objects(image_storage_root)
    assert sorted(objects) == [f"generations/{result.pk}.jpg", f"thumbnails/{result.pk}.webp"]
    assert_no_image_lost(objects=objects, upstream=lambda r: upstream_bytes(demo, r.external_url))
