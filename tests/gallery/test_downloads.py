"""Downloading from the gallery: a ZIP of the selected results, or of every result the
filters match, and the message when there are too many or none stored."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from tests.factories import GenerationFactory, GenerationResultFactory, mark_stored

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_header_counts() -> None:
    cache.clear()


def stored(prompt: str) -> Any:
    return mark_stored(GenerationResultFactory(generation=GenerationFactory(prompt_text=prompt)))


def zip_names(response: Any) -> set[str]:
    data = b"".join(response.streaming_content)
    assert int(response["Content-Length"]) == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return set(archive.namelist())


def test_download_selected_is_a_zip_of_just_the_selection(staff_client: Client) -> None:
    fox, heron, _boats = stored("a red fox"), stored("a grey heron"), stored("paper boats")
    response = staff_client.post(
        "/gallery/bulk/", {"action": "download", "ids": [fox.pk, heron.pk], "next": "/gallery/"}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert zip_names(response) == {
        f"genvault-{fox.pk}-a-red-fox.jpg",
        f"genvault-{heron.pk}-a-grey-heron.jpg",
        "metadata.json",
    }


def test_download_all_matching_takes_the_filter_from_the_url(staff_client: Client) -> None:
    fox, _heron = stored("a red fox in snow"), stored("a grey heron")
    response = staff_client.get("/gallery/download/?q=fox")
    assert zip_names(response) == {f"genvault-{fox.pk}-a-red-fox-in-snow.jpg", "metadata.json"}


def test_too_many_matching_says_so_and_goes_back_to_the_filter(
    staff_client: Client, settings: Any
) -> None:
    settings.DOWNLOAD_MAX_RESULTS = 2
    for n in range(3):
        stored(f"a red fox, take {n}")
    response = staff_client.get("/gallery/download/?q=fox", follow=True)
    assert response.redirect_chain == [("/gallery/?q=fox", 302)]
    assert "Nothing downloaded: more than 2 results match" in response.content.decode()


def test_nothing_stored_is_a_message_not_an_empty_zip(staff_client: Client) -> None:
    pending = GenerationResultFactory()
    response = staff_client.post(
        "/gallery/bulk/", {"action": "download", "ids": [pending.pk]}, follow=True
    )
    assert "Nothing to download: none of these results is stored." in response.content.decode()


def test_metadata_lists_a_selected_result_that_is_not_stored(staff_client: Client) -> None:
    fox, pending = stored("a red fox"), GenerationResultFactory()
    response = staff_client.post(
        "/gallery/bulk/", {"action": "download", "ids": [fox.pk, pending.pk]}
    )
    data = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        metadata = json.loads(archive.read("metadata.json"))
    assert [e["id"] for e in metadata["images"]] == [fox.pk]
    assert [e["id"] for e in metadata["skipped"]] == [pending.pk]
