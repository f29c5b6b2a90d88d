"""The gallery end to end: headless Chromium, the live server, the demo upstream as Ark,
and a real Celery worker on Redis storing the images.

Every action of the gallery is done here by a browser: browsing, the filters and
header counts, pagination, the viewer and the detail page (also reached by keyboard),
download, delete, re-store (single, selected, everything), the lost statement,
continue, image-to-image, saved prompts, form errors, clear all, log in and log out.

Also takes the README's screenshots (docs/screenshots/) with real stored images.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.utils import timezone
from playwright.sync_api import expect

from gallery.selectors import HEADER_COUNTS_CACHE_SECONDS
from generations.models import Generation, GenerationResult, Prompt
from tests.conftest import wait_for
from tests.factories import ImageModelFactory, jpeg_bytes, mark_stored

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

S = GenerationResult.StorageStatus
# The README's screenshots are refreshed with GENVAULT_UPDATE_SCREENSHOTS=1; other runs
# still take them (a page that cannot be shot fails) but keep them in test-artifacts/.
_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = (
    _ROOT / "docs" / "screenshots"
    if os.environ.get("GENVAULT_UPDATE_SCREENSHOTS") == "1"
    else _ROOT / "test-artifacts" / "screenshots"
)
STORE_TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def fresh_header_counts() -> None:
    """The live server shares this process's cache, which outlives each test's rows."""
    cache.clear()


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
    wait_until_done(generation)
    assert generation.results.count() == len(model_names)
    wait_until_stored_in_place(page, generation)
    return generation


def wait_until_done(generation: Generation) -> None:
    """The page generates in the background: its models answer after it is shown."""

    def done() -> bool:
        generation.refresh_from_db(fields=["status"])
        return generation.status == Generation.Status.DONE

    done.__name__ = f"generation {generation.pk} to be done"
    wait_for(done, timeout=30)


def submit_and_wait(page: Any) -> Generation:
    """Submit the generate form as it is filled now; wait for the new generation's images."""
    # No generation shown yet, so that its heading appearing means the new one is made.
    expect(page.locator(".generation")).to_have_count(0)
    newest_before = Generation.objects.order_by("-id").values_list("pk", flat=True).first() or 0
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.get_by_role("heading", name="Generation #")).to_be_visible()
    generation = Generation.objects.get(pk__gt=newest_before)
    expect(page).to_have_url(re.compile(rf"/generate/\?generation={generation.pk}$"))
    wait_until_done(generation)
    wait_until_stored_in_place(page, generation)
    return generation


def wait_until_stored_in_place(page: Any, generation: Generation) -> None:
    """On the generation's page, every card turns `stored` without the page reloading."""
    # Mark this document: if the page reloaded, the mark would be gone.
    page.evaluate("window.__sameDocument = true")
    results = list(generation.results.order_by("id"))
    assert results
    for result in results:
        card = page.locator(f'[data-result-id="{result.pk}"]')
        expect(card.locator("[data-storage-badge]")).to_have_text(
            "stored", timeout=STORE_TIMEOUT_MS
        )
        expect(card.locator("img")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    expect(page.get_by_text("Every image of this generation has been handled.")).to_be_visible()


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

    # The worker recorded the images, behind this process's cached header counts: they
    # show within the cache's lifetime.
    def six_stored_shown() -> bool:
        if page.locator(".stat--stored strong").inner_text() == "6":
            return True
        page.reload()
        return False

    wait_for(six_stored_shown, timeout=HEADER_COUNTS_CACHE_SECONDS + 10, interval=1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "gallery.png"))

    # A card opens in the viewer, whose link leads to the result's own page.
    result = last.results.order_by("id").first()
    page.locator(f'[data-result-id="{result.pk}"] .card__prompt').click()
    viewer = page.get_by_role("dialog")
    viewer.get_by_role("link", name=f"Full page of result #{result.pk}").click()
    expect(page).to_have_url(f"{base}/gallery/{result.pk}/")
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


def test_the_generate_page_comes_back_at_once_and_fills_in_each_image_as_it_arrives(
    page: Any, live_server: Any, staff_user: Any, demo: Any, celery_worker: Any
) -> None:
    base = live_server.url
    log_in(page, base)
    prompt = "two slow lighthouses [demo:latency=3]"
    page.goto(f"{base}/generate/")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    for name in ("Seedream 4.0", "Seedream 3.0"):
        page.get_by_label(name, exact=True).check()
    page.get_by_role("button", name="Generate", exact=True).click()

    expect(page.get_by_role("heading", name="Generation #")).to_be_visible()
    generation = Generation.objects.get(prompt_text=prompt)
    # Shown before the models answered: running, no image yet.
    expect(page.get_by_text("Generating… each image appears here as it arrives.")).to_be_visible()
    expect(page.locator("[data-result-id]")).to_have_count(0)
    generation.refresh_from_db()
    assert generation.status == Generation.Status.RUNNING

    page.evaluate("window.__sameDocument = true")
    expect(page.locator("[data-result-id]")).to_have_count(2, timeout=STORE_TIMEOUT_MS)
    wait_until_done(generation)
    wait_until_stored_in_place(page, generation)
    assert page.evaluate("window.__sameDocument") is True


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


# --- Browsing, filters, pagination, keyboard, delete, form errors, log out -----------

# Nothing listens on the discard port: should a browser ever follow an external URL of
# these made-up rows, it fails at once on loopback instead of reaching the internet.
UNREACHABLE_IMAGE_HOST = "http://127.0.0.1:9"
# The pagination links, by their words (their arrows are typographic characters).
OLDER = re.compile(r"^Older")
NEWER = re.compile(r"Newer$")


def make_result(
    *, prompt: str, model: Any, status: str = GenerationResult.Status.SUCCESS, **fields: Any
) -> GenerationResult:
    generation = Generation.objects.create(prompt_text=prompt, size="1024x1024")
    values: dict[str, Any] = {
        "external_url": f"{UNREACHABLE_IMAGE_HOST}/{generation.pk}.jpeg",
        "external_url_expires_at": timezone.now() + timedelta(days=1),
        "storage_status": S.PENDING,
        **fields,
    }
    values.setdefault("image_url", values["external_url"])
    return GenerationResult.objects.create(
        generation=generation,
        model=model,
        upstream_model_id=model.upstream_model_id,
        status=status,
        **values,
    )


def shown_result_ids(page: Any, expected_count: int) -> set[int]:
    cards = page.locator("ul.grid .card")
    expect(cards).to_have_count(expected_count)
    return {int(i) for i in cards.evaluate_all("cards => cards.map(c => c.dataset.resultId)")}


def header_link(page: Any, label: str) -> Any:
    header = page.get_by_role("navigation", name="Results by storage status")
    return header.get_by_role("link", name=re.compile(rf"^{label}\s*\d+$"))


def test_a_card_shows_a_placeholder_until_its_thumbnail_is_made_then_the_thumbnail(
    page: Any, live_server: Any, staff_user: Any
) -> None:
    """On the generation's page the card follows its result: stored first, with a
    neutral placeholder while the derivatives stage works, then its thumbnail; the
    browser never asks for an image that is not there."""
    base = live_server.url
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    result = make_result(prompt="a lighthouse in fog", model=model)
    failed_images: list[str] = []
    page.on(
        "response",
        lambda r: (
            failed_images.append(r.url) if "/api/images/" in r.url and r.status >= 400 else None
        ),
    )
    log_in(page, base)
    page.goto(f"{base}/generate/?generation={result.generation_id}")
    page.evaluate("window.__sameDocument = true")
    card = page.locator(f'[data-result-id="{result.pk}"]')
    expect(card.locator(".placeholder--pending")).to_be_visible()

    mark_stored(result, thumbnail=False)  # the safe stage is done; no thumbnail yet
    expect(card.locator("[data-storage-badge]")).to_have_text("stored")
    expect(card.get_by_text("thumbnail on its way")).to_be_visible()
    expect(card.locator("img")).to_have_count(0)
    expect(page.get_by_text("Every image of this generation has been handled.")).to_be_hidden()

    mark_stored(result)  # the derivatives stage has made it
    image = card.locator("img")
    expect(image).to_be_visible()
    expect(card.get_by_text("thumbnail on its way")).to_have_count(0)
    expect(page.get_by_text("Every image of this generation has been handled.")).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth") > 0
    assert image.get_attribute("src") == f"{base}{result.versioned_thumbnail_url}"
    assert page.evaluate("window.__sameDocument") is True
    assert failed_images == []


def test_browse_filter_paginate_open_delete_and_log_out(
    page: Any, live_server: Any, staff_user: Any, image_storage_root: Path
) -> None:
    base = live_server.url
    fox_model = ImageModelFactory(name="Seedream 4.0 (demo)")
    harbour_model = ImageModelFactory(name="Seedream 3.0 (demo)")
    tomorrow = timezone.now() + timedelta(days=1)
    # 26 pending results made in two queries: more than one page of 24.
    fox_generations = Generation.objects.bulk_create(
        [Generation(prompt_text=f"a red fox in snow, take {n}", size="2K") for n in range(26)]
    )
    foxes = GenerationResult.objects.bulk_create(
        [
            GenerationResult(
                generation=generation,
                model=fox_model,
                upstream_model_id=fox_model.upstream_model_id,
                status=GenerationResult.Status.SUCCESS,
                external_url=f"{UNREACHABLE_IMAGE_HOST}/fox-{generation.pk}.jpeg",
                image_url=f"{UNREACHABLE_IMAGE_HOST}/fox-{generation.pk}.jpeg",
                external_url_expires_at=tomorrow,
                storage_status=S.PENDING,
            )
            for generation in fox_generations
        ]
    )
    fox_ids = sorted(r.pk for r in foxes)
    harbour = make_result(prompt="a quiet harbour town, watercolour", model=harbour_model)
    mark_stored(harbour, data=jpeg_bytes(320, 240, color=(30, 90, 160)), thumbnail=False)
    harbour_file = image_storage_root / harbour.storage_key
    assert harbour_file.is_file()
    refused = make_result(
        prompt="an impossible staircase",
        model=harbour_model,
        status=GenerationResult.Status.FAILED,
        error_code="OutputImageSensitiveContentDetected",
        error_message="The output image may contain sensitive content.",
        external_url="",
        image_url="",
        external_url_expires_at=None,
        storage_status=S.NONE,
    )
    boats = make_result(
        prompt="three paper boats on a pond",
        model=fox_model,
        storage_status=S.FAILED,
        storage_attempts=5,
        storage_error="TransientFetchError: the image host answered 503",
        external_url_expires_at=timezone.now() + timedelta(hours=2),  # at risk
    )
    lost = make_result(
        prompt="a lantern festival by the river",
        model=fox_model,
        storage_status=S.EXPIRED,
        storage_error="ImageExpired: the upstream link answered 403",
        external_url_expires_at=timezone.now() - timedelta(hours=1),
    )
    log_in(page, base)
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/gallery/")

    # The header counts, and the first page: newest first, 24 of 30.
    for label, count in [
        ("All", 30),
        ("Stored", 1),
        ("Pending", 26),
        ("Storing", 0),
        ("Failed", 1),
        ("Expired", 1),
        ("No image", 1),
        ("At risk", 1),
    ]:
        expect(header_link(page, label).locator("strong")).to_have_text(str(count))
    expect(
        page.get_by_text(re.compile(r"^Showing 24 of 30 results, newest first\.$"))
    ).to_be_visible()
    expect(page.locator("ul.grid .card").first).to_have_attribute("data-result-id", str(lost.pk))
    newest_page = shown_result_ids(page, 24)
    expect(page.get_by_role("link", name=NEWER)).to_have_count(0)

    # "Older" leads to the six oldest, the last page; "Newer" back to the same 24.
    page.get_by_role("link", name=OLDER).click()
    expect(page).to_have_url(re.compile(r"/gallery/\?before=\d+$"))
    assert shown_result_ids(page, 6) == set(fox_ids[:6])
    expect(page.get_by_role("link", name=OLDER)).to_have_count(0)
    page.get_by_role("link", name=NEWER).click()
    assert shown_result_ids(page, 24) == newest_page
    expect(page.get_by_role("link", name=NEWER)).to_have_count(0)

    # Each header count is a link to its filter.
    for label, expected in [
        ("Failed", {boats.pk}),
        ("Stored", {harbour.pk}),
        ("Expired", {lost.pk}),
        ("No image", {refused.pk}),
        ("At risk", {boats.pk}),
    ]:
        header_link(page, label).click()
        expect(header_link(page, label)).to_have_attribute("aria-current", "true")
        assert shown_result_ids(page, len(expected)) == expected, label
    header_link(page, "All").click()
    assert len(shown_result_ids(page, 24)) == 24

    # The filter form: result status, storage status, model, prompt text.
    page.get_by_label("Result", exact=True).select_option(label="Failed")
    page.get_by_role("button", name="Filter").click()
    assert shown_result_ids(page, 1) == {refused.pk}
    expect(page.get_by_text("Generation failed").first).to_be_visible()
    page.get_by_role("link", name="Reset").click()

    page.get_by_label("Storage", exact=True).select_option(label="Failed")
    page.get_by_role("button", name="Filter").click()
    assert shown_result_ids(page, 1) == {boats.pk}
    page.get_by_role("link", name="Reset").click()

    page.get_by_label("Model", exact=True).select_option(label="Seedream 3.0 (demo)")
    page.get_by_role("button", name="Filter").click()
    assert shown_result_ids(page, 2) == {harbour.pk, refused.pk}
    page.get_by_role("link", name="Reset").click()

    # Prompt text, across pages: the filter stays on page 2.
    page.get_by_label("Prompt contains").fill("FOX IN SNOW")
    page.get_by_role("button", name="Filter").click()
    expect(
        page.get_by_text(re.compile(r"^Showing 24 results matching the filters, newest first"))
    ).to_be_visible()
    page.get_by_role("link", name=OLDER).click()
    expect(page.get_by_label("Prompt contains")).to_have_value("FOX IN SNOW")
    assert shown_result_ids(page, 2) == set(fox_ids[:2])
    expect(page.get_by_role("link", name=OLDER)).to_have_count(0)
    page.get_by_role("link", name="Newest results").click()
    expect(page.get_by_label("Prompt contains")).to_have_value("FOX IN SNOW")
    assert len(shown_result_ids(page, 24)) == 24

    # A filter that matches nothing says so.
    page.get_by_label("Prompt contains").fill("no such prompt anywhere")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No result matches these filters.")).to_be_visible()

    # A lost result: opened from the grid, it says so plainly and offers no re-store.
    page.get_by_label("Prompt contains").fill("lantern")
    page.get_by_role("button", name="Filter").click()
    lost_card = page.locator(f'[data-result-id="{lost.pk}"]')
    expect(lost_card.locator("[data-storage-badge]")).to_have_text("lost")
    expect(lost_card.get_by_role("button", name="Re-store")).to_have_count(0)
    lost_card.locator(".card__link").click()
    viewer = page.get_by_role("dialog")
    expect(viewer.get_by_role("heading", name=f"Result #{lost.pk}")).to_be_visible()
    expect(
        viewer.get_by_text("This image is lost: its upstream link expired before it was stored.")
    ).to_be_visible()
    expect(viewer.get_by_role("button", name="Re-store")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Image-to-image")).to_have_count(0)

    # Keyboard: Tab from the toolbar reaches the card's link; Enter opens it in the
    # viewer, Escape comes back to the card, and the viewer's link opens the detail page.
    page.goto(f"{base}/gallery/?q=harbour")
    harbour_card = page.locator(f'[data-result-id="{harbour.pk}"]')
    page.get_by_role("link", name="Clear all…").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_label(f"Select result {harbour.pk}")).to_be_focused()
    page.keyboard.press("Tab")
    expect(harbour_card.locator(".card__prompt")).to_be_focused()
    page.keyboard.press("Enter")
    expect(viewer.get_by_role("heading", name=f"Result #{harbour.pk}")).to_be_visible()
    page.keyboard.press("Escape")
    expect(harbour_card.locator(".card__prompt")).to_be_focused()
    page.keyboard.press("Enter")
    viewer.get_by_role("link", name=f"Full page of result #{harbour.pk}").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/gallery/{harbour.pk}/")
    expect(page.get_by_role("heading", name=f"Result #{harbour.pk}")).to_be_visible()
    page.wait_for_function("document.querySelector('.detail__image img').naturalWidth === 320")

    # Delete one result, through its confirmation: the row and its object are gone.
    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("heading", name="Delete 1 result?")).to_be_visible()
    page.get_by_role("button", name="Delete 1 result").click()
    expect(page.get_by_text(f"Deleted 1 result (#{harbour.pk}).")).to_be_visible()
    expect(page).to_have_url(f"{base}/gallery/")
    expect(header_link(page, "Stored").locator("strong")).to_have_text("0")
    assert not GenerationResult.objects.filter(pk=harbour.pk).exists()
    wait_for(lambda: not harbour_file.exists(), timeout=5)

    # The generate form shows an error for an empty prompt, and keeps what was chosen.
    generations_before = Generation.objects.count()
    page.get_by_role("link", name="Generate", exact=True).click()
    page.get_by_label("Seedream 4.0 (demo)", exact=True).check()
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.get_by_text("Please fix the fields marked below.")).to_be_visible()
    prompt_field = page.locator(".field--invalid", has=page.get_by_label("Prompt", exact=True))
    expect(prompt_field.get_by_role("alert")).to_have_text("the prompt is empty")
    expect(page.get_by_label("Seedream 4.0 (demo)", exact=True)).to_be_checked()
    assert Generation.objects.count() == generations_before

    # Log out (LOGOUT_REDIRECT_URL is the login page): the gallery asks for a login again.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{base}/accounts/login/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    page.goto(f"{base}/gallery/")
    expect(page).to_have_url(f"{base}/accounts/login/?next=/gallery/")


# --- Stars and tags ------------------------------------------------------------------


def test_star_and_find_under_favorites_then_tag_three_at_once_and_filter_by_the_tag(
    page: Any, live_server: Any, staff_user: Any
) -> None:
    base = live_server.url
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    fox, heron, boats, harbour, lantern = (
        make_result(prompt=prompt, model=model)
        for prompt in (
            "a red fox in fresh snow",
            "a grey heron at dawn",
            "three paper boats on a pond",
            "a quiet harbour town, watercolour",
            "a lantern festival by the river",
        )
    )
    log_in(page, base)

    # Star one from its card: the page comes back with the star on.
    card = page.locator(f'[data-result-id="{fox.pk}"]')
    star = card.get_by_role("button", name="Star", exact=True)
    expect(star).to_have_attribute("aria-pressed", "false")
    star.click()
    expect(page.get_by_text(f"Starred result {fox.pk}.")).to_be_visible()
    expect(card.get_by_role("button", name="Star", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    # And one from its detail page.
    page.goto(f"{base}/gallery/{heron.pk}/")
    page.get_by_role("button", name="Star", exact=True).click()
    expect(page.get_by_text(f"Starred result {heron.pk}.")).to_be_visible()
    expect(page).to_have_url(f"{base}/gallery/{heron.pk}/")

    # The favorites filter finds exactly those, and says so in the URL.
    page.get_by_role("link", name="← Gallery").click()
    page.get_by_label("Starred only").check()
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]favorite=on"))
    assert shown_result_ids(page, 2) == {fox.pk, heron.pk}
    expect(page.get_by_label("Starred only")).to_be_checked()
    page.get_by_role("link", name="Reset").click()
    shown_result_ids(page, 5)

    # Tag three in one bulk action: Enter in the tags field adds them.
    for result in (boats, harbour, lantern):
        page.get_by_label(f"Select result {result.pk}", exact=True).check()
    tags_field = page.get_by_label("Tags for the selected", exact=True)
    tags_field.fill("waterside,  dusk ")
    tags_field.press("Enter")
    expect(page.get_by_text("Tagged 3 results with “waterside”, “dusk”.")).to_be_visible()
    for result in (boats, harbour, lantern):
        tags = page.get_by_role("list", name=f"Tags of result {result.pk}")
        expect(tags.get_by_role("link")).to_have_text(["dusk", "waterside"])
    expect(page.get_by_role("list", name=f"Tags of result {fox.pk}")).to_have_count(0)

    # Filter by the tag, typed in another case: the three, and the tag in the URL.
    page.get_by_label("Tag", exact=True).fill("WaterSide")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]tag=WaterSide"))
    assert shown_result_ids(page, 3) == {boats.pk, harbour.pk, lantern.pk}
    page.get_by_role("link", name="Reset").click()

    # A tag on a card links to its results; taking it off one leaves the other two.
    page.locator(f'[data-result-id="{harbour.pk}"]').get_by_role("link", name="dusk").click()
    expect(page).to_have_url(f"{base}/gallery/?tag=dusk")
    assert shown_result_ids(page, 3) == {boats.pk, harbour.pk, lantern.pk}
    page.locator(f'[data-result-id="{harbour.pk}"]').get_by_role(
        "button", name="Remove the tag dusk"
    ).click()
    expect(page.get_by_text(f"Removed the tag “dusk” from result {harbour.pk}.")).to_be_visible()
    expect(page).to_have_url(f"{base}/gallery/?tag=dusk")
    assert shown_result_ids(page, 2) == {boats.pk, lantern.pk}


# --- Continue, image-to-image, saved prompts, re-store one, selected, everything -----


def unstored_copy(
    source: GenerationResult, *, image_index: int, storage_status: str, **fields: Any
) -> GenerationResult:
    """Another result of the source's generation with the same live upstream link, not stored."""
    values: dict[str, Any] = {
        "external_url": source.external_url,
        "image_url": source.external_url,
        "external_url_expires_at": source.external_url_expires_at,
        **fields,
    }
    return GenerationResult.objects.create(
        generation=source.generation,
        model=source.model,
        upstream_model_id=source.upstream_model_id,
        image_index=image_index,
        status=GenerationResult.Status.SUCCESS,
        storage_status=storage_status,
        **values,
    )


def test_continue_image_to_image_saved_prompt_and_restores(
    page: Any, live_server: Any, staff_user: Any, demo: Any, celery_worker: Any
) -> None:
    base = live_server.url
    saved = Prompt.objects.create(title="Harbour", text="a quiet harbour town at dawn, watercolour")
    log_in(page, base)
    prompt = "a lighthouse at dusk, oil painting"
    source_generation = generate(page, base, prompt=prompt, model_names=["Seedream 4.0"])
    source = source_generation.results.get()

    # Continue, from the grid: the form comes prefilled with prompt, model and size.
    page.get_by_role("link", name="Gallery", exact=True).click()
    page.locator(f'[data-result-id="{source.pk}"]').get_by_role("link", name="Continue").click()
    expect(page).to_have_url(f"{base}/generate/?from={source.pk}")
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(prompt)
    expect(page.get_by_label("Seedream 4.0", exact=True)).to_be_checked()
    expect(page.get_by_label("Seedream 3.0", exact=True)).not_to_be_checked()
    expect(page.get_by_label("SeedEdit 3.0", exact=True)).not_to_be_checked()
    expect(page.get_by_label("Size", exact=True)).to_have_value("1024x1024")
    continued = submit_and_wait(page)
    assert continued.pk != source_generation.pk
    assert (continued.prompt_text, continued.size) == (prompt, "1024x1024")
    assert [r.model for r in continued.results.all()] == [source.model]

    # Image-to-image, from the detail page: this result is the reference, and the
    # upstream receives its stored bytes.
    source.refresh_from_db()
    page.goto(f"{base}/gallery/{source.pk}/")
    page.get_by_role("link", name="Image-to-image").click()
    expect(page.get_by_label("Reference image")).to_have_value(f"result:{source.pk}")
    expect(page.get_by_label("Seedream 4.0", exact=True)).to_be_checked()
    for other in ("SeedEdit 3.0", "Seedream 4.5", "Seedream 5.0 lite"):  # they take one too
        page.get_by_label(other, exact=True).uncheck()
    page.get_by_label("Prompt", exact=True).fill("the same lighthouse in deep winter")
    demo.clear_request_log()
    edited = submit_and_wait(page)
    assert edited.reference_result_id == source.pk
    calls = [
        entry
        for entry in demo.request_log
        if entry["method"] == "POST" and entry["path"].endswith("/images/generations")
    ]
    assert len(calls) == 1
    body = calls[0]["json"]
    assert body["model"] == source.upstream_model_id
    reference = body["image"][0] if isinstance(body["image"], list) else body["image"]
    header, _, encoded = reference.partition(",")
    assert header == f"data:{source.content_type};base64"
    assert hashlib.sha256(base64.b64decode(encoded)).hexdigest() == source.sha256

    # A saved prompt, chosen from the list, with a custom size and the model's params.
    page.get_by_role("link", name="Generate", exact=True).click()
    page.get_by_label("…or a saved prompt").select_option(label=f"Harbour: {saved.text}")
    page.get_by_label("Seedream 3.0", exact=True).check()
    page.get_by_label("…or a custom size").fill("1536x1024")
    seed = page.get_by_label("Seed", exact=True)
    # The help text is tied to its field, so a screen reader reads it with the field.
    expect(seed).to_have_accessible_description(re.compile(r"^Only for models that take one"))
    seed.fill("42")
    page.get_by_label("Guidance scale", exact=True).fill("3.5")
    page.get_by_label("Add the upstream's watermark").uncheck()
    demo.clear_request_log()
    from_saved = submit_and_wait(page)
    assert (from_saved.prompt_id, from_saved.prompt_text) == (saved.pk, saved.text)
    expect(page.locator(".generation .prompt-text")).to_have_text(saved.text)
    (call,) = [e["json"] for e in demo.request_log if e["method"] == "POST"]
    assert call["prompt"] == saved.text
    assert (call["size"], call["seed"], call["guidance_scale"]) == ("1536x1024", 42, 3.5)
    assert call["watermark"] is False

    # Results that were not stored (storing failed, or never ran) while the link lives.
    # The first one's image host is slow, so that its detail page sees it being stored;
    # the second's link is dead by now, though its recorded expiry says otherwise.
    image_path = urlsplit(source.external_url).path
    one = unstored_copy(
        source,
        image_index=1,
        storage_status=S.FAILED,
        storage_error="TransientFetchError: 503",
        external_url=demo.signed_url(image_path, faults={"slow_image": "1.5"}),
    )
    dead = unstored_copy(
        source,
        image_index=7,
        storage_status=S.FAILED,
        storage_error="TransientFetchError: 503",
        external_url=demo.signed_url(
            image_path, faults={}, signed_at=timezone.now() - timedelta(days=2)
        ),
    )
    picked = [
        unstored_copy(source, image_index=2, storage_status=S.PENDING),
        unstored_copy(source, image_index=3, storage_status=S.FAILED, storage_error="timeout"),
    ]
    left = unstored_copy(source, image_index=4, storage_status=S.FAILED, storage_error="503")
    lost = unstored_copy(
        source,
        image_index=5,
        storage_status=S.EXPIRED,
        external_url_expires_at=timezone.now() - timedelta(minutes=5),
    )

    def stored(*results: GenerationResult) -> bool:
        ids = [r.pk for r in results]
        return GenerationResult.objects.filter(pk__in=ids, storage_status=S.STORED).count() == len(
            ids
        )

    # Re-store from the detail page: the page follows the result without a reload until
    # it is stored, then shows the full image and the Download link.
    page.goto(f"{base}/gallery/{one.pk}/")
    badge = page.locator(".page-head .badge")
    expect(badge).to_have_text("failed")
    expect(page.get_by_role("link", name="Download")).to_have_count(0)
    page.get_by_role("button", name="Re-store").click()
    expect(page.get_by_text(f"Queued result {one.pk} for storing.")).to_be_visible()
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    expect(badge).to_have_text(re.compile(r"^(pending|storing)$"))
    expect(page.get_by_role("link", name="Download")).to_be_hidden()
    expect(badge).to_have_text("stored", timeout=STORE_TIMEOUT_MS)
    expect(page.get_by_role("link", name="Download")).to_be_visible()
    expect(page.get_by_role("button", name="Re-store")).to_have_count(0)
    expect(page.get_by_text("Shown from the upstream link")).to_have_count(0)
    image = page.locator(".detail__image img")
    expect(image).to_have_attribute("src", f"/api/images/{one.pk}")
    page.wait_for_function("document.querySelector('.detail__image img').naturalWidth > 0")
    assert page.evaluate("window.__sameDocument") is True
    assert stored(one)

    # One whose link turns out dead: in place, the page says it is lost, and why.
    page.goto(f"{base}/gallery/{dead.pk}/")
    page.get_by_role("button", name="Re-store").click()
    expect(page.get_by_text(f"Queued result {dead.pk} for storing.")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    expect(badge).to_have_text("lost", timeout=STORE_TIMEOUT_MS)
    expect(page.get_by_text("image_expired: the image host answered 403")).to_be_visible()
    expect(page.get_by_role("link", name="Download")).to_be_hidden()
    assert page.evaluate("window.__sameDocument") is True

    # Re-store the selected ones: only they are queued, and the worker stores them.
    page.get_by_role("link", name="← Gallery").click()
    for result in picked:
        page.get_by_label(f"Select result {result.pk}").check()
    page.get_by_role("button", name="Re-store selected").click()
    expect(page.get_by_text("Queued 2 results for storing.")).to_be_visible()
    wait_for(lambda: stored(*picked), timeout=30)
    assert not stored(left)

    # Re-store everything not stored: the one left; the lost one cannot come back.
    page.get_by_role("button", name="Re-store everything not stored").click()
    expect(page.get_by_text("Queued 1 result for storing, newest first.")).to_be_visible()
    wait_for(lambda: stored(left), timeout=30)
    lost.refresh_from_db()
    assert lost.storage_status == S.EXPIRED

    # The worker stored these behind the gallery's back, and the header counts are
    # cached for a few seconds: a reload shows them once that time is up.
    def stored_count_caught_up() -> bool:
        page.reload()
        return header_link(page, "Stored").locator("strong").inner_text() == "8"

    wait_for(stored_count_caught_up, timeout=HEADER_COUNTS_CACHE_SECONDS + 10, interval=1)
    expect(header_link(page, "Expired").locator("strong")).to_have_text("2")
    for result in [*picked, left]:
        card = page.locator(f'[data-result-id="{result.pk}"]')
        expect(card.locator("[data-storage-badge]")).to_have_text("stored")
        expect(card.locator("img")).to_be_visible()

    # The admin: search the results, then re-store the selected one with its action.
    staff_user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_generationresult", "change_generationresult"]
        )
    )
    via_admin = unstored_copy(source, image_index=6, storage_status=S.FAILED, storage_error="503")
    page.get_by_role("link", name="Admin", exact=True).click()
    page.get_by_role("link", name="Generation results").click()
    page.locator("#searchbar").fill("lighthouse at dusk")
    page.locator("#searchbar").press("Enter")
    expect(page.locator("#result_list tbody tr")).to_have_count(9)  # source, continued, copies
    page.locator(f'#result_list input[name="_selected_action"][value="{via_admin.pk}"]').check()
    page.get_by_role("combobox", name="Action").select_option(
        label="Re-store selected results that are not stored"
    )
    page.get_by_role("button", name="Go", exact=True).click()
    expect(page.get_by_text("Queued 1 result(s) for storing.")).to_be_visible()
    wait_for(lambda: stored(via_admin), timeout=30)
