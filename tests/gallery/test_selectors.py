"""The gallery's search: each filter of the index, filters together, and keyset pages that
cost the same however deep they are, whatever the filters."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generations.filters import ResultFilterForm
from generations.models import Generation, GenerationResult, ImageModel
from generations.selectors import results_filtered, results_page
from generations.services.organize import results_add_tags, results_set_favorite
from tests.factories import GenerationFactory, GenerationResultFactory, ImageModelFactory

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus


def filters_of(query: dict[str, Any], models: list[ImageModel] | None = None) -> dict[str, Any]:
    """What the index makes of a query string: its form's filters."""
    form = ResultFilterForm(query, models=models or list(ImageModel.objects.all()))
    return form.filters()


def found(query: dict[str, Any]) -> set[int]:
    return {r.pk for r in results_filtered(filters=filters_of(query))}


def result(
    *,
    prompt: str = "a red fox in snow",
    created: datetime | None = None,
    reference_url: str = "",
    **fields: Any,
) -> GenerationResult:
    generation = GenerationFactory(prompt_text=prompt, reference_image_url=reference_url)
    if created is not None:
        fields["created_at"] = created
    return GenerationResultFactory(generation=generation, **fields)


def test_prompt_text_matches_any_case_and_part_of_a_word() -> None:
    fox = result(prompt="A Red Fox in fresh snow")
    result(prompt="a grey heron")
    assert found({"q": "red fox"}) == {fox.pk}
    assert found({"q": "FOX IN"}) == {fox.pk}
    assert found({"q": "ed Fo"}) == {fox.pk}
    assert found({"q": "owl"}) == set()


def test_a_date_range_takes_whole_days_at_both_ends() -> None:
    day = datetime(2026, 3, 10, tzinfo=timezone.get_current_timezone())
    before = result(created=day - timedelta(seconds=1))
    first = result(created=day)
    last = result(created=day + timedelta(days=2, hours=23, minutes=59))
    after = result(created=day + timedelta(days=3))
    assert found({"since": "2026-03-10", "until": "2026-03-12"}) == {first.pk, last.pk}
    assert found({"since": "2026-03-13"}) == {after.pk}
    assert found({"until": "2026-03-09"}) == {before.pk}
    # The last day there is: no day after it to stop before.
    assert found({"since": "2026-03-10", "until": date.max.isoformat()}) == {
        first.pk,
        last.pk,
        after.pk,
    }


def test_a_range_that_ends_before_it_starts_is_an_error_on_until() -> None:
    form = ResultFilterForm({"since": "2026-03-12", "until": "2026-03-10"}, models=[])
    filters = form.filters()
    assert "until" in form.errors and "until" not in filters
    assert filters["since"] == date(2026, 3, 12)


def test_model_storage_status_and_result_status() -> None:
    model = ImageModelFactory()
    mine = result(model=model, storage_status=S.STORED)
    failed = result(status=GenerationResult.Status.FAILED, storage_status=S.NONE)
    pending = result(storage_status=S.PENDING)
    assert found({"model": str(model.pk)}) == {mine.pk}
    assert found({"storage_status": "stored"}) == {mine.pk}
    assert found({"storage_status": "none"}) == {failed.pk}
    assert found({"status": "FAILED"}) == {failed.pk}
    assert found({"storage_status": "pending"}) == {pending.pk}


def test_size_is_the_stored_image_s_width_and_height() -> None:
    square = result(width=2048, height=2048)
    result(width=2048, height=1152)
    result()  # not stored: no size
    assert found({"size": "2048x2048"}) == {square.pk}
    assert found({"size": " 2048 \u00d7 2048 "}) == {square.pk}


def test_aspect_is_computed_from_width_and_height_within_one_percent() -> None:
    wide = result(width=2560, height=1440)
    almost = result(width=1365, height=768)  # 16:9, rounded to whole pixels
    four_three = result(width=2304, height=1728)
    three_two = result(width=2496, height=1664)
    result()  # not stored: no aspect
    assert found({"aspect": "16:9"}) == {wide.pk, almost.pk}
    assert found({"aspect": "4:3"}) == {four_three.pk}
    assert found({"aspect": "3:2"}) == {three_two.pk}
    assert found({"aspect": "9:16"}) == set()


def test_seed_is_read_from_the_params_used() -> None:
    seeded = result(params_used={"seed": 42, "size": "1024x1024"})
    result(params_used={"seed": 7})
    result(params_used={})
    assert found({"seed": "42"}) == {seeded.pk}
    assert found({"seed": "-1"}) == set()


def test_reference_tells_image_to_image_from_text_to_image() -> None:
    source = result(prompt="a lighthouse")
    by_url = result(reference_url="https://images.example.test/ref.jpeg")
    by_result = result()
    Generation.objects.filter(pk=by_result.generation_id).update(reference_result=source)
    assert found({"reference": "with"}) == {by_url.pk, by_result.pk}
    assert found({"reference": "without"}) == {source.pk}


def test_favorites_and_tags() -> None:
    starred, tagged, both, neither = (result() for _ in range(4))
    results_set_favorite(result_ids=[starred.pk, both.pk], favorite=True)
    results_add_tags(result_ids=[tagged.pk, both.pk], names=["Night Sky"])
    results_add_tags(result_ids=[neither.pk], names=["harbour"])
    assert found({"favorite": "on"}) == {starred.pk, both.pk}
    assert found({"tag": "night sky"}) == {tagged.pk, both.pk}
    assert found({"tag": "  NIGHT   SKY "}) == {tagged.pk, both.pk}
    assert found({"tag": "no such tag"}) == set()


def test_filters_combine() -> None:
    model = ImageModelFactory()
    hit = result(prompt="a fox at dusk", model=model, width=2560, height=1440)
    result(prompt="a fox at dusk", model=model, width=2048, height=2048)  # not 16:9
    result(prompt="a fox at dusk", width=2560, height=1440)  # another model
    not_starred = result(prompt="a fox at dusk", model=model, width=2560, height=1440)
    results_set_favorite(
        result_ids=GenerationResult.objects.exclude(pk=not_starred.pk).values_list("pk", flat=True),
        favorite=True,
    )
    results_add_tags(result_ids=[hit.pk, not_starred.pk], names=["dusk"])
    query = {"q": "fox", "model": str(model.pk), "aspect": "16:9", "favorite": "1", "tag": "dusk"}
    assert found(query) == {hit.pk}


@pytest.mark.parametrize(
    "query",
    [
        {"size": "big"},
        {"size": "0x100"},
        {"aspect": "16/9"},
        {"aspect": "0:1"},
        {"seed": "٣"},  # not ASCII digits
        {"seed": "99999999999"},
        {"since": "yesterday"},
        {"model": "٣"},
        {"storage_status": "bogus"},
    ],
)
def test_a_value_that_is_not_valid_is_shown_as_an_error_and_left_out(
    query: dict[str, str],
) -> None:
    fox = result(prompt="a fox")
    result(prompt="a heron")
    form = ResultFilterForm({**query, "q": "fox"}, models=list(ImageModel.objects.all()))
    filters = form.filters()
    assert set(query) <= set(form.errors)
    # The prompt filter still applies.
    assert {r.pk for r in results_filtered(filters=filters)} == {fox.pk}


# --- Keyset pages with filters -------------------------------------------------------


def many_results(count: int) -> list[int]:
    """`count` results, alternately starred, tagged "sky", 16:9 and seeded; ascending ids."""
    model = ImageModelFactory()
    generations = Generation.objects.bulk_create(
        Generation(prompt_text=f"a fox at dusk, study {i}") for i in range(count)
    )
    rows = GenerationResult.objects.bulk_create(
        GenerationResult(
            generation=g,
            model=model,
            upstream_model_id=model.upstream_model_id,
            status="SUCCESS",
            storage_status=S.STORED,
            favorite=i % 2 == 0,
            width=2560 if i % 3 else 2048,
            height=1440 if i % 3 else 2048,
            params_used={"seed": 42 if i % 2 else 7},
        )
        for i, g in enumerate(generations)
    )
    ids = sorted(r.pk for r in rows)
    results_add_tags(result_ids=ids[::2], names=["sky"])
    return ids


PAGE_FILTERS = [
    {},
    {"q": "fox at dusk"},
    {"favorite": "1"},
    {"tag": "sky"},
    {"aspect": "16:9"},
    {"size": "2560x1440"},
    {"seed": "7"},
    {"since": "2000-01-01", "until": "2999-12-31"},
    {"reference": "without"},
    {"q": "fox", "favorite": "1", "tag": "sky", "aspect": "16:9", "storage_status": "stored"},
]


@pytest.mark.parametrize("query", PAGE_FILTERS, ids=lambda q: "&".join(q) or "none")
def test_a_deep_page_costs_what_page_one_does_with_any_filter(query: dict[str, str]) -> None:
    many_results(600)
    filters = filters_of(query)
    matching = [r.pk for r in results_filtered(filters=filters)]  # newest first
    assert len(matching) > 60, "enough rows to page deep"
    deep = matching[-40]

    def page(**cursor: int | None) -> tuple[list[int], int]:
        with CaptureQueriesContext(connection) as queries:
            cut = results_page(
                results_filtered(filters=filters),
                before=cursor.get("before"),
                after=cursor.get("after"),
                per_page=24,
            )
            # What a card shows comes with the page (counted here), not while it renders.
            for shown in cut.results:
                assert shown.generation.prompt_text.startswith("a fox at dusk")
                assert shown.tag_names == (["sky"] if shown.favorite else [])
        return [r.pk for r in cut.results], len(queries)

    first, first_cost = page()
    older, older_cost = page(before=deep)
    newer, newer_cost = page(after=deep)

    assert first == matching[:24]
    assert older == matching[matching.index(deep) + 1 :][:24]
    assert newer == matching[: matching.index(deep)][-24:]
    assert first_cost == older_cost == newer_cost
    # One query for the rows (with their generation and model joined in), one for their
    # tags, and with the tag filter one to find the tag by its name.
    assert first_cost == (3 if "tag" in query else 2)
