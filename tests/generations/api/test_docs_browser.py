"""The docs page in Chromium: a staff member logs in, the page shows every operation
from this server's own assets, and trying them out works with the session (a DELETE
too, with the page's CSRF token)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.factories import GenerationResultFactory
from tests.gallery.conftest import browser, page, pytest_runtest_makereport  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_browse_and_try_the_api_with_nothing_loaded_from_elsewhere(
    page: Any,  # noqa: F811
    live_server: Any,
    staff_user: Any,
) -> None:
    base = live_server.url
    result = GenerationResultFactory()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{base}/accounts/login/?next=/api/docs")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill("staff-pass-123")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}/api/docs")

    listing = page.locator("#operations-results-listResults")
    expect(listing).to_be_visible()
    for operation in ("getResult", "deleteResult", "restoreResult"):
        expect(page.locator(f"#operations-results-{operation}")).to_be_visible()
    listing.locator(".opblock-summary").click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    answer = listing.locator(".live-responses-table tr.response .response-col_status").first
    expect(answer).to_have_text("200")
    expect(listing.locator(".live-responses-table")).to_contain_text(f'"id": {result.pk}')

    # An unsafe method from the page carries the CSRF token the page was given.
    deleting = page.locator("#operations-results-deleteResult")
    deleting.locator(".opblock-summary").click()
    deleting.get_by_role("button", name="Try it out").click()
    deleting.locator("input[placeholder='result_id']").fill(str(result.pk))
    deleting.get_by_role("button", name="Execute").click()
    status = deleting.locator(".live-responses-table tr.response .response-col_status").first
    expect(status).to_have_text("204")
    assert not type(result).objects.filter(pk=result.pk).exists()

    elsewhere = [url for url in requested if not url.startswith(base)]
    assert not elsewhere, elsewhere
    assert any(url.endswith("/api/openapi.json") for url in requested)
