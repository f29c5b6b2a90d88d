"""The admin's tags: search, counts, rename, merge; and stars and tags on the results' list."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from generations.models import GenerationResult, ResultTag, Tag
from generations.services.organize import results_add_tags
from tests.factories import GenerationResultFactory

pytestmark = pytest.mark.django_db

TAGS = "/admin/generations/tag/"


def tagged(*names: str) -> GenerationResult:
    result = GenerationResultFactory()
    results_add_tags(result_ids=[result.pk], names=names)
    return result


def test_the_tag_list_searches_and_counts_results(admin_client: Client) -> None:
    for _ in range(3):
        tagged("sky")
    tagged("sky", "night sky")
    tagged("harbour")

    page = admin_client.get(TAGS, {"q": "SKY"}).content.decode()
    listed = admin_client.get(TAGS).context["cl"].result_list
    assert {tag.name: tag.result_count for tag in listed} == {
        "sky": 4,
        "night sky": 1,
        "harbour": 1,
    }
    assert "night sky" in page and "harbour" not in page


def test_a_rename_is_an_edit_and_refuses_a_name_taken_in_another_case(
    admin_client: Client,
) -> None:
    result = tagged("skye")
    Tag.objects.create(name="Moon")
    skye = Tag.objects.get(key="skye")
    url = f"{TAGS}{skye.pk}/change/"

    taken = admin_client.post(url, {"name": "MOON"})
    assert taken.status_code == 200
    assert "The tag “Moon” exists already: merge the two instead." in taken.content.decode()

    renamed = admin_client.post(url, {"name": "  Sky   at dusk "})
    assert renamed.status_code == 302
    assert GenerationResult.objects.get(pk=result.pk).tag_names == ["Sky at dusk"]


def test_merging_selected_tags_puts_their_results_under_the_first_listed(
    admin_client: Client,
) -> None:
    one, two, three = tagged("sky", "heaven"), tagged("heaven"), tagged("skies")
    other = tagged("harbour")
    chosen = list(Tag.objects.filter(key__in=["sky", "heaven", "skies"]).order_by("key"))
    assert [t.name for t in chosen] == ["heaven", "skies", "sky"]  # the list is by name

    response = admin_client.post(
        TAGS,
        {"action": "merge_into_first", "_selected_action": [t.pk for t in chosen]},
        follow=True,
    )

    assert "Merged “skies”, “sky” into “heaven”: 1 more result(s) carry it now." in (
        response.content.decode()
    )
    assert sorted(Tag.objects.values_list("name", flat=True)) == ["harbour", "heaven"]
    for result in (one, two, three):
        assert GenerationResult.objects.get(pk=result.pk).tag_names == ["heaven"]
    assert GenerationResult.objects.get(pk=other.pk).tag_names == ["harbour"]


def test_merging_one_tag_asks_for_more(admin_client: Client) -> None:
    tagged("sky")
    response = admin_client.post(
        TAGS,
        {"action": "merge_into_first", "_selected_action": [Tag.objects.get().pk]},
        follow=True,
    )
    assert "Select two tags or more to merge." in response.content.decode()
    assert Tag.objects.count() == 1


def test_the_results_list_shows_and_filters_stars_and_tags(admin_client: Client) -> None:
    starred = tagged("sky", "moon")
    GenerationResult.objects.filter(pk=starred.pk).update(favorite=True)
    plain = tagged("harbour")
    url = "/admin/generations/generationresult/"

    everything = admin_client.get(url)
    assert "moon, sky" in everything.content.decode()

    def shown(query: dict[str, Any]) -> set[int]:
        return {r.pk for r in admin_client.get(url, query).context["cl"].result_list}

    assert shown({"favorite__exact": "1"}) == {starred.pk}
    assert shown({"tags__id__exact": Tag.objects.get(key="harbour").pk}) == {plain.pk}


def test_a_result_s_page_lists_its_tags(admin_client: Client) -> None:
    result = tagged("sky at dusk")
    page = admin_client.get(f"/admin/generations/generationresult/{result.pk}/change/")
    assert page.status_code == 200
    link = ResultTag.objects.get(result=result)
    assert f'<option value="{link.tag_id}" selected>sky at dusk</option>' in page.content.decode()
