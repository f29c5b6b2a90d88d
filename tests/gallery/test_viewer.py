"""The gallery's viewer through Django's test client: what it shows of one result, its
neighbours in the gallery's filtered list, where its forms come back to, and access."""

from __future__ import annotations

import html as html_lib
import re
from decimal import Decimal
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from generations.models import GenerationResult
from generations.services.organize import results_add_tags
from tests.factories import GenerationResultFactory, ImageModelFactory, mark_stored

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_header_counts() -> None:
    cache.clear()


def viewer_url(result_id: int, query: str = "") -> str:
    url = reverse("gallery:viewer", args=[result_id])
    return f"{url}?{query}" if query else url


def neighbours(response: Any) -> tuple[int | None, int | None]:
    """The (newer, older) ids the viewer's content names."""
    assert response.status_code == 200
    root = re.search(r"<div[^>]*data-viewer-content[^>]*>", response.content.decode())
    assert root is not None
    newer = re.search(r'data-newer-id="(\d+)"', root.group(0))
    older = re.search(r'data-older-id="(\d+)"', root.group(0))
    return (
        int(newer.group(1)) if newer else None,
        int(older.group(1)) if older else None,
    )


def text(response: Any) -> str:
    return html_lib.unescape(response.content.decode())


def test_the_viewer_is_for_staff_only(client: Client, plain_user: Any) -> None:
    result = GenerationResultFactory()
    url = viewer_url(result.pk, "tag=sky")
    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("login") + "?next=")
    client.force_login(plain_user)
    refused = client.get(url)
    assert refused.status_code == 403
    assert result.generation.prompt_text not in refused.content.decode()


def test_an_unknown_result_answers_404(staff_client: Client) -> None:
    result = GenerationResultFactory()
    assert staff_client.get(viewer_url(result.pk + 1)).status_code == 404
    assert staff_client.post(viewer_url(result.pk)).status_code == 405


def test_neighbours_are_those_of_the_filtered_list_across_any_page(
    staff_client: Client,
) -> None:
    results = [GenerationResultFactory() for _ in range(7)]  # oldest first
    night = [results[1], results[3], results[4], results[6]]
    results_add_tags(result_ids=[r.pk for r in night], names=["night"])

    # Unfiltered: the ids either side, newest first.
    assert neighbours(staff_client.get(viewer_url(results[3].pk))) == (
        results[4].pk,
        results[2].pk,
    )
    assert neighbours(staff_client.get(viewer_url(results[6].pk))) == (None, results[5].pk)
    assert neighbours(staff_client.get(viewer_url(results[0].pk))) == (results[1].pk, None)

    # Tagged "night": the untagged are stepped over; a page cursor changes nothing.
    tagged = "tag=night&before=2&view=1"
    assert neighbours(staff_client.get(viewer_url(results[4].pk, tagged))) == (
        results[6].pk,
        results[3].pk,
    )
    assert neighbours(staff_client.get(viewer_url(results[1].pk, tagged))) == (
        results[3].pk,
        None,
    )
    # A result the filters leave out still shows, between the two that match around it.
    assert neighbours(staff_client.get(viewer_url(results[5].pk, tagged))) == (
        results[6].pk,
        results[4].pk,
    )
    stars = "favorite=on"
    GenerationResult.objects.filter(pk=results[2].pk).update(favorite=True)
    assert neighbours(staff_client.get(viewer_url(results[2].pk, stars))) == (None, None)


def test_the_viewer_shows_what_the_detail_page_shows_with_storage_folded(
    staff_client: Client,
) -> None:
    model = ImageModelFactory(name="Heron model", price_per_image=Decimal("0.25"))
    result = mark_stored(
        GenerationResultFactory(
            model=model,
            generation__prompt_text="a grey heron at dawn",
            params_used={"seed": 4242, "size": "1024x1024"},
        ),
        backend="local",
    )
    results_add_tags(result_ids=[result.pk], names=["birds"])

    viewer = text(staff_client.get(viewer_url(result.pk, "q=heron")))
    detail = text(staff_client.get(reverse("gallery:detail", args=[result.pk])))
    for shown in (viewer, detail):
        assert "Result #" + str(result.pk) in shown
        assert "a grey heron at dawn" in shown
        assert "Heron model" in shown
        assert "<dt>Seed</dt><dd>4242</dd>" in shown
        assert "<dt>Cost</dt><dd>0.2500 CNY" in shown
        assert f"{result.width} \u00d7 {result.height} px" in shown
        assert 'alt="a grey heron at dawn"' in shown
        assert ">birds</a>" in shown
        assert result.sha256 in shown
    # The storage facts are folded away in the viewer.
    folded = viewer[viewer.index("<details") : viewer.index("</details>")]
    assert result.sha256 in folded and result.storage_key in folded
    assert result.sha256 not in viewer[: viewer.index("<details")]
    # The full image, shown at fit, a click away from 100%.
    assert 'data-zoom aria-pressed="false"' in viewer
    assert f'src="{result.versioned_url}"' in viewer


def test_the_viewers_forms_come_back_to_the_gallery_with_the_viewer_open(
    staff_client: Client,
) -> None:
    result = GenerationResultFactory()
    shown = text(staff_client.get(viewer_url(result.pk, "q=fox&before=90&view=3")))
    back = f"/gallery/?q=fox&before=90&view={result.pk}"
    assert f'name="next" value="{back}"' in shown
    assert f"/gallery/{result.pk}/delete/?next=/gallery/%3Fq%3Dfox%26before%3D90" in shown
    # The card for the grid behind, rendered by the same template as the grid's.
    card = re.search(r"<template data-viewer-card>\s*(.*?)</template>", shown, re.S)
    assert card is not None
    assert f'<li class="card" data-result-id="{result.pk}"' in card.group(1)

    # The script sends the star to come back to the viewer's own rendering, message and all.
    response = staff_client.post(
        reverse("gallery:favorite", args=[result.pk]),
        {"favorite": "1", "next": viewer_url(result.pk, "q=fox")},
        follow=True,
    )
    assert response.redirect_chain == [(viewer_url(result.pk, "q=fox"), 302)]
    again = text(response)
    assert f"Starred result {result.pk}." in again
    assert 'aria-pressed="true"' in again


def test_the_viewer_reads_the_same_number_of_queries_whatever_it_shows(
    staff_client: Client,
) -> None:
    few = [GenerationResultFactory() for _ in range(3)]
    results_add_tags(result_ids=[few[1].pk], names=["sky"])
    with CaptureQueriesContext(connection) as small:
        assert staff_client.get(viewer_url(few[1].pk, "tag=sky")).status_code == 200
    many = [GenerationResultFactory() for _ in range(40)]
    results_add_tags(
        result_ids=[r.pk for r in many], names=["sky", "moon", "harbour", "dusk", "rain"]
    )
    with CaptureQueriesContext(connection) as large:
        assert staff_client.get(viewer_url(many[20].pk, "tag=sky")).status_code == 200
    assert len(large) == len(small)


def test_the_gallery_pages_links_leave_the_viewer_behind(staff_client: Client) -> None:
    results = [GenerationResultFactory() for _ in range(26)]
    html = text(staff_client.get(f"{reverse('gallery:index')}?q=fox&view={results[-1].pk}"))
    older = re.search(r'href="([^"]*)" rel="next"', html)
    assert older is not None
    assert "view=" not in older.group(1) and "q=fox" in older.group(1)
    # Without the script, a card links to its result's page.
    assert f'href="/gallery/{results[-1].pk}/" data-viewer-open' in html
