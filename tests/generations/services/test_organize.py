"""Stars and tags on results: what each write leaves, the naming rules, and the announce."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generations.models import GenerationResult, InvalidTagName, ResultTag, Tag
from generations.services.deleting import results_delete
from generations.services.organize import (
    MAX_TAGS_AT_ONCE,
    clean_tag_names,
    results_add_tags,
    results_remove_tags,
    results_set_favorite,
    tags_merge,
)
from generations.signals import results_changed
from tests.factories import GenerationResultFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def announcements() -> Iterator[list[Any]]:
    """Each `results_changed` sent, as a listener (the gallery's counts) would hear it."""
    heard: list[Any] = []

    def listener(**kwargs: Any) -> None:
        heard.append(kwargs)

    results_changed.connect(listener)
    try:
        yield heard
    finally:
        results_changed.disconnect(listener)


def tag_names_of(result: GenerationResult) -> list[str]:
    return GenerationResult.objects.get(pk=result.pk).tag_names


# --- Stars ---------------------------------------------------------------------------


def test_starring_marks_only_the_given_results_and_announces_after_commit(
    announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    one, two, other = (GenerationResultFactory() for _ in range(3))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        matched = results_set_favorite(result_ids=[one.pk, two.pk, 999_999], favorite=True)
    assert matched == 2
    assert set(GenerationResult.objects.filter(favorite=True)) == {one, two}
    assert len(callbacks) == 1 and len(announcements) == 1

    assert results_set_favorite(result_ids=[one.pk], favorite=False) == 1
    assert set(GenerationResult.objects.filter(favorite=True)) == {two}
    assert not GenerationResult.objects.get(pk=other.pk).favorite


def test_starring_nothing_that_exists_announces_nothing(
    announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert results_set_favorite(result_ids=[999_999], favorite=True) == 0
    assert announcements == []


# --- Tag names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("  night  sky ", "night sky"),
        ("Night\u00a0Sky", "Night Sky"),  # a no-break space is a space
        ("cafe\u0301", "café"),  # one Unicode form, whichever the keyboard sent
        ("x" * 50, "x" * 50),
        ("猫", "猫"),
    ],
)
def test_a_typed_name_is_trimmed_and_its_spaces_collapsed(typed: str, kept: str) -> None:
    assert clean_tag_names([typed]) == [kept]


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("", "cannot be empty"),
        ("   ", "cannot be empty"),
        ("x" * 51, "longer than 50 characters"),
        ("night\tsky", "control characters"),
        ("night\nsky", "control characters"),
        ("bell\x07", "control characters"),
        ("a, b", "cannot hold a comma"),
        (7, "must be text"),
        (None, "must be text"),
    ],
)
def test_a_bad_name_is_refused_saying_why(typed: Any, words: str) -> None:
    with pytest.raises(InvalidTagName) as refused:
        clean_tag_names([typed])
    assert words in refused.value.message


def test_names_differing_by_case_or_spacing_are_one_tag() -> None:
    assert clean_tag_names(["Sky", "sky", " SKY ", "night  sky", "Night Sky"]) == [
        "Sky",
        "night sky",
    ]


def test_no_names_or_too_many_are_refused() -> None:
    with pytest.raises(InvalidTagName, match="at least one tag"):
        clean_tag_names([])
    with pytest.raises(InvalidTagName, match=f"at most {MAX_TAGS_AT_ONCE} tags"):
        clean_tag_names([f"tag {n}" for n in range(MAX_TAGS_AT_ONCE + 1)])


# --- Adding and removing tags --------------------------------------------------------


def test_adding_tags_creates_the_new_ones_and_reuses_the_others_in_any_case(
    announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    sky = Tag.objects.create(name="Sky")
    one, two = GenerationResultFactory(), GenerationResultFactory()
    with django_capture_on_commit_callbacks(execute=True):
        tagging = results_add_tags(result_ids=[one.pk, two.pk], names=["sky", " night ", "SKY"])
    assert [t.name for t in tagging.tags] == ["Sky", "night"]
    assert tagging.tags[0].pk == sky.pk
    assert tagging.results == 2
    assert Tag.objects.count() == 2
    assert tag_names_of(one) == tag_names_of(two) == ["night", "Sky"]
    assert len(announcements) == 1


def test_adding_a_tag_a_result_has_keeps_its_date_and_adds_no_second_link() -> None:
    result = GenerationResultFactory()
    results_add_tags(result_ids=[result.pk], names=["sky"])
    first = ResultTag.objects.get()
    results_add_tags(result_ids=[result.pk], names=["Sky", "moon"])
    assert ResultTag.objects.filter(result=result).count() == 2
    assert ResultTag.objects.get(tag__key="sky").created_at == first.created_at


def test_a_bad_name_writes_nothing() -> None:
    result = GenerationResultFactory()
    with pytest.raises(InvalidTagName):
        results_add_tags(result_ids=[result.pk], names=["fine", "x" * 51])
    assert not Tag.objects.exists()
    assert not ResultTag.objects.exists()


def test_tagging_a_thousand_results_writes_the_links_in_batches() -> None:
    result = GenerationResultFactory()
    GenerationResult.objects.bulk_create(
        GenerationResult(generation=result.generation, upstream_model_id="m", status="SUCCESS")
        for _ in range(999)
    )
    ids = list(GenerationResult.objects.values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        tagging = results_add_tags(result_ids=ids, names=["sky", "night"])
    assert tagging.results == 1000
    assert ResultTag.objects.count() == 2000
    # The links go in batches (SQLite takes a few hundred rows a query), not one by one.
    assert len(queries) <= 2000 // 100


def test_removing_takes_off_only_the_named_tags_of_the_given_results(
    announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    one, two, other = (GenerationResultFactory() for _ in range(3))
    results_add_tags(result_ids=[one.pk, two.pk, other.pk], names=["sky", "night"])
    with django_capture_on_commit_callbacks(execute=True):
        removed = results_remove_tags(result_ids=[one.pk, two.pk], names=["SKY", "no such tag"])
    assert removed == 2
    assert tag_names_of(one) == tag_names_of(two) == ["night"]
    assert tag_names_of(other) == ["night", "sky"]
    assert Tag.objects.filter(key="sky").exists()  # still on `other`
    assert len(announcements) == 1


def test_removing_a_tag_nobody_carries_announces_nothing(
    announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    result = GenerationResultFactory()
    with django_capture_on_commit_callbacks(execute=True):
        assert results_remove_tags(result_ids=[result.pk], names=["sky"]) == 0
    assert announcements == []


def test_deleting_a_result_takes_its_tag_links_with_it() -> None:
    result, kept = GenerationResultFactory(), GenerationResultFactory()
    results_add_tags(result_ids=[result.pk, kept.pk], names=["sky"])
    results_delete(result_ids=[result.pk])
    assert list(ResultTag.objects.values_list("result_id", flat=True)) == [kept.pk]


# --- Merging, and the admin's rename rules -------------------------------------------


def test_merging_moves_every_result_to_the_first_tag_once_and_drops_the_others(
    announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    both, only_sky, only_heaven, only_skies = (GenerationResultFactory() for _ in range(4))
    results_add_tags(result_ids=[both.pk, only_sky.pk], names=["sky"])
    results_add_tags(result_ids=[both.pk, only_heaven.pk], names=["heaven"])
    results_add_tags(result_ids=[only_heaven.pk, only_skies.pk], names=["skies"])
    sky, heaven, skies = (Tag.objects.get(key=k) for k in ("sky", "heaven", "skies"))

    with django_capture_on_commit_callbacks(execute=True):
        gained = tags_merge(into=sky, tags=[heaven, sky, skies])

    assert gained == 2  # only_heaven and only_skies; `both` carried sky already
    assert list(Tag.objects.values_list("name", flat=True)) == ["sky"]
    for result in (both, only_sky, only_heaven, only_skies):
        assert tag_names_of(result) == ["sky"]
    assert ResultTag.objects.count() == 4
    assert len(announcements) == 1


def test_a_rename_follows_the_typing_rules_and_refuses_a_name_taken_in_another_case() -> None:
    sky = Tag.objects.create(name="sky")
    moon = Tag.objects.create(name="moon")
    moon.name = "  Full   Moon "
    moon.full_clean()
    moon.save()
    moon.refresh_from_db()
    assert (moon.name, moon.key) == ("Full Moon", "full moon")

    moon.name = "SKY"
    with pytest.raises(ValidationError) as clash:
        moon.full_clean()
    assert "“sky” exists already" in str(clash.value)
    moon.name = "moon\tlight"
    with pytest.raises(ValidationError, match="control characters"):
        moon.full_clean()
    sky.full_clean()  # a tag does not clash with itself
