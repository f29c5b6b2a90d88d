"""Downloads and share links end to end, in headless Chromium against the live server:
a ZIP of a selection opened from the browser's download, and a share link opened in a
browser with no session, then revoked."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from playwright.sync_api import expect

from generations.models import GenerationResult, Share
from generations.services.organize import results_add_tags
from storage_backends import images as image_storage
from tests.factories import ImageModelFactory, jpeg_bytes, mark_stored
from tests.gallery.test_browser import log_in, make_result

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fresh_header_counts() -> None:
    cache.clear()


def stored_bytes(result: GenerationResult) -> bytes:
    with image_storage.open_object(backend=result.storage_backend, key=result.storage_key) as fh:
        return fh.read()


def stored(prompt: str, model: Any, shade: int) -> GenerationResult:
    result = make_result(prompt=prompt, model=model)
    return mark_stored(result, data=jpeg_bytes(96 + shade, 64, color=(shade * 40, 80, 160)))


def test_download_a_selection_of_five_and_open_the_zip(
    page: Any, live_server: Any, staff_user: Any, tmp_path: Path
) -> None:
    base = live_server.url
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    prompts = [
        "a red fox in fresh snow",
        "a grey heron at dawn",
        "three paper boats on a pond",
        "a quiet harbour town, watercolour",
        "a lantern festival by the river",
    ]
    five = [stored(prompt, model, n) for n, prompt in enumerate(prompts)]
    left_out = stored("a bowl of ripe figs", model, 5)
    results_add_tags(result_ids=[five[0].pk], names=["winter"])
    GenerationResult.objects.filter(pk=five[1].pk).update(favorite=True)
    log_in(page, base)

    for result in five:
        page.get_by_label(f"Select result {result.pk}", exact=True).check()
    with page.expect_download() as waiting:
        page.get_by_role("button", name="Download selected").click()
    download = waiting.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)

    assert saved.name.startswith("genvault-") and saved.suffix == ".zip"
    with zipfile.ZipFile(io.BytesIO(saved.read_bytes())) as archive:
        assert archive.testzip() is None
        metadata = json.loads(archive.read("metadata.json"))
        by_id = {entry["id"]: entry for entry in metadata["images"]}
        assert set(by_id) == {r.pk for r in five}
        assert len(archive.namelist()) == 6  # five images and metadata.json
        for result in five:
            entry = by_id[result.pk]
            data = archive.read(entry["file"])
            assert data == stored_bytes(result)
            assert entry["sha256"] == hashlib.sha256(data).hexdigest() == result.sha256
            assert entry["prompt"] == result.generation.prompt_text
            assert entry["modelName"] == "Seedream 4.0 (demo)"
            assert entry["size"] == f"{result.width}x{result.height}"
        assert all(left_out.generation.prompt_text not in n for n in archive.namelist())
    assert by_id[five[0].pk]["tags"] == ["winter"]
    assert [by_id[r.pk]["favorite"] for r in five] == [False, True, False, False, False]
    assert metadata["skipped"] == []


def test_share_one_result_open_it_without_a_session_then_revoke_it(
    page: Any, browser: Any, live_server: Any, staff_user: Any
) -> None:
    base = live_server.url
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    heron = stored("a grey heron at dawn", model, 1)
    fox = stored("a red fox in fresh snow", model, 2)
    log_in(page, base)

    page.goto(f"{base}/gallery/{heron.pk}/")
    page.get_by_role("button", name="Share", exact=True).click()
    expect(page.get_by_role("heading", name="Shares")).to_be_visible()
    expect(page.get_by_text(f"Shared result {heron.pk} until")).to_be_visible()
    share = Share.objects.get()
    link = page.locator(f'[data-share-id="{share.pk}"] [data-share-link]')
    url = link.get_attribute("href")
    assert url == share.path

    # A stranger: a fresh browser with no cookies at all.
    stranger = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        visitor = stranger.new_page()
        response = visitor.goto(f"{base}{url}")
        assert response is not None and response.status == 200
        images = visitor.locator("main img")
        expect(images).to_have_count(1)
        visitor.wait_for_function(
            "document.querySelector('main img').complete"
            " && document.querySelector('main img').naturalWidth > 0"
        )
        image_url = images.get_attribute("src")
        assert image_url == f"/s/{share.token}/images/{heron.pk}"
        expect(visitor.get_by_text("a grey heron at dawn")).to_be_visible()
        text = visitor.locator("body").inner_text()
        assert "red fox" not in text
        assert heron.storage_key not in visitor.content()
        assert stranger.cookies() == []
        fetched = visitor.request.get(f"{base}{image_url}")
        assert fetched.status == 200 and fetched.body() == stored_bytes(heron)
        assert visitor.request.get(f"{base}/s/{share.token}/images/{fox.pk}").status == 404

        # Revoked in the gallery: the page and its image are gone at once.
        page.get_by_role("button", name=f"Revoke share {share.pk}").click()
        expect(
            page.get_by_text(f"Revoked share {share.pk}: its link opens nothing now.")
        ).to_be_visible()
        response = visitor.reload()
        assert response is not None and response.status == 404
        expect(visitor.get_by_text("a grey heron at dawn")).to_have_count(0)
        response = visitor.goto(f"{base}{image_url}")
        assert response is not None and response.status == 404
    finally:
        stranger.close()
