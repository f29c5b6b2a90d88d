"""The gallery end to end: headless Chromium, the live server, the demo upstream as Ark,
and a real Celery worker on Redis storing the images.

Also takes the README's screenshots (docs/screenshots/) with real stored images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from generations.models import Generation, GenerationResult
from tests.conftest import wait_for
from tests.factories import ImageModelFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

S = GenerationResult.StorageStatus
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
STORE_TIMEOUT_MS = 30_000


def log_in(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/gallery/")
    expect(page).to_have_url(f"{base_url}/accounts/login/?next=/gallery/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill("staff-pass-123")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Gallery")).to_be_visible()


def generate(page: Any, base_url: str, *, prompt: str, model_names: list[str]) -> Generation:
    """Fill the generate form and wait for every result to be stored, in place."""
    page.goto(f"{base_url}/generate/")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    for name in model_names:
        page.get_by_label(name, exact=True).check()
    page.get_by_label("Size", exact=True).select_option("1024x1024")
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.get_by_role("heading", name="Generation #")).to_be_visible()
    generation = Generation.objects.get(prompt_text=prompt)
    assert f"?generation={generation.pk}" in page.url

    # Mark this document: if the page reloaded, the mark would be gone.
    page.evaluate("window.__sameDocument = true")
    results = list(generation.results.order_by("id"))
    assert len(results) == len(model_names)
    for result in results:
        card = page.locator(f'[data-result-id="{result.pk}"]')
        expect(card.locator("[data-storage-badge]")).to_have_text(
            "stored", timeout=STORE_TIMEOUT_MS
        )
        expect(card.locator("img")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    expect(page.get_by_text("Every image of this generation has been handled.")).to_be_visible()
    return generation


def test_generate_watch_store_open_and_download(
    page: Any, live_server: Any, staff_user: Any, demo: Any, celery_worker: Any
) -> None:
    base = live_server.url
    ImageModelFactory(name="Seedream 4.0 (demo)")
    ImageModelFactory(name="Seedream 3.0 (demo)")
    names = ["Seedream 4.0 (demo)", "Seedream 3.0 (demo)"]
    log_in(page, base)

    # One generation with two models, then single-model ones: six cards in the gallery.
    generate(page, base, prompt="a lighthouse at dusk, oil painting", model_names=names)
    generate(page, base, prompt="a red fox in fresh snow", model_names=names[:1])
    generate(page, base, prompt="a quiet harbour town, watercolour", model_names=names[1:])
    generate(page, base, prompt="paper cranes over a city at night", model_names=names[:1])
    last = generate(page, base, prompt="a bowl of ripe figs, still life", model_names=names[1:])

    page.get_by_role("link", name="Gallery", exact=True).click()
    expect(page.locator(".card")).to_have_count(6)
    expect(page.locator(".card img").first).to_be_visible()
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.card img'))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    expect(page.locator(".stat--stored strong")).to_have_text("6")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "gallery.png"))

    result = last.results.order_by("id").first()
    page.locator(f'[data-result-id="{result.pk}"] .card__prompt').click()
    expect(page.get_by_role("heading", name=f"Result #{result.pk}")).to_be_visible()
    result.refresh_from_db()
    expect(page.get_by_text(result.sha256)).to_be_visible()
    expect(page.get_by_text(result.storage_key)).to_be_visible()
    page.wait_for_function("document.querySelector('.detail__image img').naturalWidth > 0")
    page.screenshot(path=str(SCREENSHOTS / "detail.png"))

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download").click()
    download = download_info.value
    assert download.suggested_filename.startswith(f"genvault-{result.pk}-")
    data = Path(download.path()).read_bytes()
    assert len(data) == result.byte_size
    assert hashlib.sha256(data).hexdigest() == result.sha256


def test_restore_bulk_delete_and_clear_all(
    page: Any,
    live_server: Any,
    staff_user: Any,
    demo: Any,
    celery_worker: Any,
    image_storage_root: Path,
) -> None:
    base = live_server.url
    ImageModelFactory(name="Seedream 4.0 (demo)")
    ImageModelFactory(name="Seedream 3.0 (demo)")
    log_in(page, base)
    generation = generate(
        page,
        base,
        prompt="three paper boats on a pond",
        model_names=["Seedream 4.0 (demo)", "Seedream 3.0 (demo)"],
    )
    first, second = generation.results.order_by("id")

    # A result whose storing failed (a 503 from the image host, say), while its
    # upstream link is still valid: Re-store brings it back.
    failed = GenerationResult.objects.create(
        generation=generation,
        model=first.model,
        upstream_model_id=first.upstream_model_id,
        image_index=1,
        status=GenerationResult.Status.SUCCESS,
        external_url=first.external_url,
        image_url=first.external_url,
        external_url_expires_at=first.external_url_expires_at,
        storage_status=S.FAILED,
        storage_attempts=5,
        storage_error="TransientFetchError: the image host answered 503",
    )
    page.goto(f"{base}/gallery/?storage_status=failed")
    card = page.locator(f'[data-result-id="{failed.pk}"]')
    expect(card.locator("[data-storage-badge]")).to_have_text("failed")
    card.get_by_role("button", name="Re-store").click()
    expect(page.get_by_text(f"Queued result {failed.pk} for storing.")).to_be_visible()

    def failed_row_stored() -> bool:
        return GenerationResult.objects.filter(pk=failed.pk, storage_status=S.STORED).exists()

    wait_for(failed_row_stored, timeout=30)
    page.goto(f"{base}/gallery/{failed.pk}/")
    expect(page.locator(".page-head .badge")).to_have_text("stored")
    expect(page.get_by_role("button", name="Re-store")).to_have_count(0)

    # Bulk delete two, after confirming.
    first.refresh_from_db()
    second.refresh_from_db()
    assert (image_storage_root / first.storage_key).is_file()
    page.goto(f"{base}/gallery/")
    page.get_by_label(f"Select result {first.pk}").check()
    page.get_by_label(f"Select result {second.pk}").check()
    page.get_by_role("button", name="Delete selected…").click()
    expect(page.get_by_role("heading", name="Delete 2 results?")).to_be_visible()
    page.get_by_role("button", name="Delete 2 results").click()
    expect(page.get_by_text("Deleted 2 results.")).to_be_visible()
    expect(page.locator(".card")).to_have_count(1)
    assert not GenerationResult.objects.filter(pk__in=[first.pk, second.pk]).exists()
    wait_for(lambda: not (image_storage_root / first.storage_key).exists(), timeout=5)
    assert not (image_storage_root / second.storage_key).exists()

    # Clear all: a wrong word is refused, DELETE clears.
    page.get_by_role("link", name="Clear all…").click()
    page.get_by_label("Type DELETE to confirm").fill("delete it")
    page.get_by_role("button", name="Delete everything").click()
    expect(page.get_by_text("Nothing was deleted: type DELETE")).to_be_visible()
    assert GenerationResult.objects.count() == 1
    page.get_by_label("Type DELETE to confirm").fill("DELETE")
    page.get_by_role("button", name="Delete everything").click()
    expect(page.get_by_text("Cleared the gallery: deleted 1 result.")).to_be_visible()
    expect(page.get_by_text("Nothing here yet.")).to_be_visible()
    assert GenerationResult.objects.count() == 0
