"""The gallery's viewer end to end, in headless Chromium against the live server: opened
from a card, stepped with the keyboard across a page boundary and back, linked by its
URL, starring, downloading, the list of shortcuts, and the focus back on the card."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from playwright.sync_api import expect

from generations.models import GenerationResult
from storage_backends import images as image_storage
from tests.factories import ImageModelFactory, jpeg_bytes, mark_stored
from tests.gallery.test_browser import SCREENSHOTS, log_in, make_result

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PER_PAGE = 3
PROMPTS = [
    "a grey heron at dawn",
    "three paper boats on a pond",
    "a quiet harbour town, watercolour",
    "a lantern festival by the river",
    "a red fox in fresh snow",
]


INSIDE_THE_VIEWER = "document.querySelector('[data-viewer]').contains(document.activeElement)"


@pytest.fixture(autouse=True)
def fresh_header_counts() -> None:
    cache.clear()


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of three, so that five results make two pages."""
    monkeypatch.setattr("gallery.views.RESULTS_PER_PAGE", PER_PAGE)


def stored_results() -> list[GenerationResult]:
    """Five stored results, oldest first: the gallery shows the last three on page one."""
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    results = []
    for n, prompt in enumerate(PROMPTS):
        result = make_result(prompt=prompt, model=model, params_used={"seed": 100 + n})
        data = jpeg_bytes(160 + 10 * n, 120, color=(40 * n, 90, 160))
        results.append(mark_stored(result, data=data))
    return results


def viewer_heading(page: Any) -> Any:
    return page.get_by_role("dialog").get_by_role("heading", level=2)


def view_param(page: Any) -> str | None:
    match = re.search(r"[?&]view=(\d+)", page.url)
    return match.group(1) if match else None


def shown_cards(page: Any) -> list[int]:
    cards = page.locator("ul.grid .card")
    return [int(i) for i in cards.evaluate_all("cards => cards.map(c => c.dataset.resultId)")]


def test_step_across_pages_link_reload_star_download_help_and_close(
    page: Any, live_server: Any, staff_user: Any, small_pages: None
) -> None:
    base = live_server.url
    heron, boats, harbour, lanterns, fox = stored_results()
    log_in(page, base)
    assert shown_cards(page) == [fox.pk, lanterns.pk, harbour.pk]

    # A click on a card's image opens it, at fit, with its facts and its prompt as alt.
    page.locator(f'[data-result-id="{lanterns.pk}"] .card__link').click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(viewer_heading(page)).to_have_text(f"Result #{lanterns.pk}")
    image = dialog.locator(".viewer__image img")
    expect(image).to_have_attribute("alt", "a lantern festival by the river")
    expect(dialog.get_by_text("Seed", exact=True)).to_be_visible()
    expect(dialog.get_by_text("103", exact=True)).to_be_visible()
    # The storage facts are folded away until asked for.
    expect(dialog.get_by_text(lanterns.sha256)).to_be_hidden()
    dialog.locator("summary", has_text="Storage").click()
    expect(dialog.get_by_text(lanterns.sha256)).to_be_visible()
    assert view_param(page) == str(lanterns.pk)

    # A click on the image shows it at 100%, another at fit again.
    page.wait_for_function("document.querySelector('.viewer__image img').naturalWidth === 190")
    zoom = dialog.locator("[data-zoom]")
    zoom.click()
    expect(zoom).to_have_attribute("aria-pressed", "true")
    assert image.evaluate("img => getComputedStyle(img).maxWidth") == "none"
    zoom.click()
    expect(zoom).to_have_attribute("aria-pressed", "false")

    # Right steps to the last card of the page, then across to the first of page two:
    # the grid behind follows, and the URL says which page and which result.
    page.keyboard.press("ArrowRight")
    expect(viewer_heading(page)).to_have_text(f"Result #{harbour.pk}")
    assert view_param(page) == str(harbour.pk)
    page.keyboard.press("j")
    expect(viewer_heading(page)).to_have_text(f"Result #{boats.pk}")
    expect(page).to_have_url(re.compile(rf"\?before={harbour.pk}&view={boats.pk}$"))
    assert shown_cards(page) == [boats.pk, heron.pk]
    page.keyboard.press("ArrowRight")
    expect(viewer_heading(page)).to_have_text(f"Result #{heron.pk}")
    expect(dialog.get_by_role("button", name="Next result")).to_be_disabled()
    # ...and back, across the boundary the other way.
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("k")
    expect(viewer_heading(page)).to_have_text(f"Result #{harbour.pk}")
    assert harbour.pk in shown_cards(page)
    page.keyboard.press("ArrowRight")
    expect(viewer_heading(page)).to_have_text(f"Result #{boats.pk}")
    expect(page).to_have_url(re.compile(rf"\?before={harbour.pk}&view={boats.pk}$"))

    # A reload (or the link) opens the same image in the viewer, over its page.
    page.reload()
    expect(viewer_heading(page)).to_have_text(f"Result #{boats.pk}")
    assert shown_cards(page) == [boats.pk, heron.pk]
    page.wait_for_function("document.querySelector('.viewer__image img').naturalWidth === 170")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "viewer.png"))

    # f stars it, in place; the card behind shows the star too.
    star = dialog.get_by_role("button", name="Star")
    expect(star).to_have_attribute("aria-pressed", "false")
    page.evaluate("window.__sameDocument = true")
    page.keyboard.press("f")
    expect(star).to_have_attribute("aria-pressed", "true")
    expect(dialog.locator(".message")).to_have_text(f"Starred result {boats.pk}.")
    expect(dialog.get_by_role("status")).to_have_text(f"Starred result {boats.pk}.")
    assert GenerationResult.objects.get(pk=boats.pk).favorite is True
    card = page.locator(f'ul.grid [data-result-id="{boats.pk}"]')
    expect(card.locator(".star")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.__sameDocument") is True

    # Tags typed in the viewer are added in place too; the shortcuts wait while one types.
    field = dialog.get_by_label(f"Add tags to result {boats.pk}")
    field.press_sequentially("fjords")
    field.press("Enter")
    expect(dialog.get_by_role("link", name="fjords")).to_be_visible()
    expect(card.get_by_role("link", name="fjords")).to_have_count(1)
    assert GenerationResult.objects.get(pk=boats.pk).tag_names == ["fjords"]
    expect(star).to_have_attribute("aria-pressed", "true")
    dialog.get_by_role("button", name="Next result").focus()

    # d downloads the stored bytes.
    with page.expect_download() as waiting:
        page.keyboard.press("d")
    saved = Path(waiting.value.path()).read_bytes()
    with image_storage.open_object(backend=boats.storage_backend, key=boats.storage_key) as fh:
        assert saved == fh.read()

    # ? lists the shortcuts; Escape closes that list first, then the viewer.
    page.keyboard.press("?")
    shortcuts = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(shortcuts).to_be_visible()
    expect(shortcuts.get_by_text("Star or unstar")).to_be_visible()
    page.keyboard.press("Escape")
    expect(shortcuts).to_be_hidden()
    expect(viewer_heading(page)).to_have_text(f"Result #{boats.pk}")

    # The focus stays in the viewer, however far one tabs.
    for _ in range(40):
        page.keyboard.press("Tab")
        assert page.evaluate(INSIDE_THE_VIEWER)
    for _ in range(5):
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(INSIDE_THE_VIEWER)

    page.keyboard.press("Escape")
    expect(page.locator("[data-viewer]")).to_be_hidden()
    expect(card.locator(".card__prompt")).to_be_focused()
    assert view_param(page) is None

    # Enter on the focused card opens it again; Delete asks, then deletes.
    page.keyboard.press("Enter")
    expect(viewer_heading(page)).to_have_text(f"Result #{boats.pk}")
    page.keyboard.press("Delete")
    expect(page.get_by_role("heading", name="Delete 1 result?")).to_be_visible()
    page.get_by_role("button", name="Delete 1 result").click()
    expect(page.get_by_text(f"Deleted 1 result (#{boats.pk}).")).to_be_visible()
    assert not GenerationResult.objects.filter(pk=boats.pk).exists()
    expect(page).to_have_url(f"{base}/gallery/?before={harbour.pk}")
    assert shown_cards(page) == [heron.pk]


def test_without_javascript_a_card_opens_the_result_page(
    browser: Any, live_server: Any, staff_user: Any
) -> None:
    base = live_server.url
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    result = mark_stored(make_result(prompt="a grey heron at dawn", model=model))
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        log_in(page, base)
        page.locator(f'[data-result-id="{result.pk}"] .card__link').click()
        expect(page).to_have_url(f"{base}/gallery/{result.pk}/")
        expect(page.get_by_role("heading", name=f"Result #{result.pk}")).to_be_visible()
        # A linked viewer shows the gallery, its card a link to the same page.
        page.goto(f"{base}/gallery/?view={result.pk}")
        expect(page.locator("[data-viewer]")).to_be_hidden()
        page.locator(f'[data-result-id="{result.pk}"] .card__prompt').click()
        expect(page).to_have_url(f"{base}/gallery/{result.pk}/")
    finally:
        context.close()


def test_the_viewer_moves_only_for_those_who_have_not_asked_for_less_motion(
    page: Any, live_server: Any, staff_user: Any
) -> None:
    base = live_server.url
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    result = mark_stored(make_result(prompt="a grey heron at dawn", model=model))
    log_in(page, base)
    animation = "getComputedStyle(document.querySelector('[data-viewer]')).animationName"
    for preference, expected in (("reduce", "none"), ("no-preference", "viewer-in")):
        page.emulate_media(reduced_motion=preference)
        page.goto(f"{base}/gallery/?view={result.pk}")
        expect(viewer_heading(page)).to_have_text(f"Result #{result.pk}")
        assert page.evaluate(animation) == expected


def test_c_and_i_start_a_generation_from_the_result_and_a_dead_link_opens_nothing(
    page: Any, live_server: Any, staff_user: Any
) -> None:
    base = live_server.url
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    heron = mark_stored(make_result(prompt="a grey heron at dawn", model=model))
    log_in(page, base)

    page.goto(f"{base}/gallery/?view={heron.pk}")
    expect(viewer_heading(page)).to_have_text(f"Result #{heron.pk}")
    page.keyboard.press("c")
    expect(page).to_have_url(f"{base}/generate/?from={heron.pk}")
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a grey heron at dawn")

    page.goto(f"{base}/gallery/?view={heron.pk}")
    expect(viewer_heading(page)).to_have_text(f"Result #{heron.pk}")
    page.keyboard.press("i")
    expect(page).to_have_url(f"{base}/generate/?reference={heron.pk}")

    # A link to a result deleted since: the gallery, without a viewer or the dead id.
    page.goto(f"{base}/gallery/?q=heron&view={heron.pk + 100}")
    expect(page).to_have_url(f"{base}/gallery/?q=heron")
    expect(page.locator("[data-viewer]")).to_be_hidden()
