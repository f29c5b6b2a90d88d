"""Share links from the gallery: from a result's page, a selection and a tag; the Shares
page lists them with their state and revokes them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from generations.models import Share
from generations.services.organize import results_add_tags
from tests.factories import GenerationFactory, GenerationResultFactory, mark_stored

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_header_counts() -> None:
    cache.clear()


def stored(prompt: str) -> Any:
    return mark_stored(GenerationResultFactory(generation=GenerationFactory(prompt_text=prompt)))


def shown_link(response: Any) -> str:
    match = re.search(r"(http://testserver/s/[^/\s<\"]+/)", response.content.decode())
    assert match, "no share link on the page"
    return match[1].removeprefix("http://testserver")


def test_share_one_result_from_its_page_then_revoke_it(staff_client: Client) -> None:
    heron = stored("a heron at dawn")
    page = staff_client.get(f"/gallery/{heron.pk}/").content.decode()
    assert 'action="/gallery/shares/new/"' in page

    response = staff_client.post("/gallery/shares/new/", {"result": heron.pk}, follow=True)
    share = Share.objects.get()
    assert response.redirect_chain == [("/gallery/shares/", 302)]
    assert f"Shared result {heron.pk} until" in response.content.decode()
    link = shown_link(response)
    assert link == share.path
    assert Client().get(link).status_code == 200

    response = staff_client.post(f"/gallery/shares/{share.pk}/revoke/", follow=True)
    assert f"Revoked share {share.pk}: its link opens nothing now." in response.content.decode()
    assert ">revoked<" in response.content.decode()
    assert Client().get(link).status_code == 404


def test_share_a_selection_and_a_tag(staff_client: Client) -> None:
    fox, heron, boats = stored("a red fox"), stored("a grey heron"), stored("paper boats")
    staff_client.post("/gallery/bulk/", {"action": "share", "ids": [fox.pk, heron.pk]})
    selection = Share.objects.get()
    assert set(selection.results.values_list("pk", flat=True)) == {fox.pk, heron.pk}

    results_add_tags(result_ids=[boats.pk], names=["Pond"])
    response = staff_client.post("/gallery/shares/new/", {"tag": "pond"}, follow=True)
    assert "Shared the tag “Pond” until" in response.content.decode()
    tag_share = Share.objects.get(kind=Share.Kind.TAG)
    assert list(tag_share.results.values_list("pk", flat=True)) == [boats.pk]

    listing = staff_client.get("/gallery/shares/").content.decode()
    assert "the tag “Pond”" in listing and "a selection of 2" in listing


def test_a_share_refused_says_why(staff_client: Client) -> None:
    pending = GenerationResultFactory()
    response = staff_client.post("/gallery/shares/new/", {"result": pending.pk}, follow=True)
    assert (
        f"No share made: nothing to share: result {pending.pk} has no stored image."
        in response.content.decode()
    )
    response = staff_client.post("/gallery/shares/new/", {"tag": "nowhere"}, follow=True)
    assert "No share made: no tag “nowhere”." in response.content.decode()
    assert not Share.objects.exists()
