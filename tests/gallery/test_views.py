"""The staff gallery through Django's test client: access, CSRF, every action's effect."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from generations.models import Generation, GenerationResult, ImageModel, Prompt, ResultTag, Tag
from generations.services.organize import results_add_tags
from generations.services.storing import results_restore
from tests.factories import (
    GenerationFactory,
    GenerationResultFactory,
    ImageModelFactory,
    mark_stored,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_header_counts() -> None:
    """Each test's rows are rolled back, but the cache is not: start without cached counts."""
    cache.clear()


S = GenerationResult.StorageStatus
LOST_SENTENCE = "This image is lost: its upstream link expired before it was stored."


def stored_result(**kwargs: Any) -> GenerationResult:
    """A result whose image and thumbnail really are in the local storage."""
    return mark_stored(GenerationResultFactory(**kwargs), backend="local")


def lost_result() -> GenerationResult:
    return GenerationResultFactory(
        storage_status=S.EXPIRED,
        external_url_expires_at=timezone.now() - timedelta(hours=1),
        storage_error="ImageExpired: 403",
    )


def page_text(response: Any) -> str:
    return response.content.decode()


def get_pages(result: GenerationResult) -> list[str]:
    return [
        reverse("gallery:index"),
        reverse("gallery:index") + "?storage_status=stored&q=fox&before=1000",
        reverse("gallery:index") + "?model=1&after=3",
        reverse("gallery:detail", args=[result.pk]),
        reverse("gallery:delete", args=[result.pk]),
        reverse("gallery:clear_all"),
        reverse("gallery:generate"),
        reverse("gallery:generate") + f"?from={result.pk}",
        reverse("gallery:generate") + f"?reference={result.pk}",
        reverse("gallery:generate") + f"?generation={result.generation_id}",
    ]


def post_actions(result: GenerationResult) -> list[tuple[str, dict[str, Any]]]:
    return [
        (reverse("gallery:restore", args=[result.pk]), {}),
        (reverse("gallery:delete", args=[result.pk]), {}),
        (reverse("gallery:bulk"), {"action": "delete", "ids": [result.pk], "confirmed": "yes"}),
        (reverse("gallery:bulk"), {"action": "restore", "ids": [result.pk]}),
        (reverse("gallery:favorite", args=[result.pk]), {"favorite": "1"}),
        (reverse("gallery:add_tags", args=[result.pk]), {"tags": "sky"}),
        (reverse("gallery:remove_tag", args=[result.pk]), {"tag": "sky"}),
        (reverse("gallery:bulk"), {"action": "favorite", "ids": [result.pk]}),
        (reverse("gallery:bulk"), {"action": "add_tags", "ids": [result.pk], "tags": "sky"}),
        (reverse("gallery:restore_all"), {}),
        (reverse("gallery:clear_all"), {"confirmation": "DELETE"}),
        (reverse("gallery:generate"), {"prompt": "a cat", "models": [result.model_id]}),
    ]


def snapshot() -> list[tuple[Any, ...]]:
    rows = GenerationResult.objects.order_by("pk").values_list(
        "pk", "storage_status", "storage_attempts", "storage_key", "favorite"
    )
    return [
        *rows,
        ("generations", Generation.objects.count(), Prompt.objects.count()),
        ("tags", Tag.objects.count(), ResultTag.objects.count()),
    ]


# --- Access ------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(client: Client) -> None:
    result = GenerationResultFactory(storage_status=S.FAILED)
    for url in get_pages(result):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url
    for url, data in post_actions(result):
        response = client.post(url, data)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url
    assert GenerationResult.objects.filter(pk=result.pk, storage_status=S.FAILED).exists()


def test_signed_in_non_staff_get_403(client: Client, plain_user: Any) -> None:
    result = GenerationResultFactory(storage_status=S.FAILED)
    client.force_login(plain_user)
    for url in get_pages(result):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "Not allowed" in page_text(response)
    for url, data in post_actions(result):
        assert client.post(url, data).status_code == 403, url
    assert GenerationResult.objects.filter(pk=result.pk, storage_status=S.FAILED).exists()


def test_staff_see_every_page(staff_client: Client) -> None:
    result = stored_result()
    for url in get_pages(result):
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert "Log out" in page_text(response)


def test_login_page_logs_staff_in_and_logout_is_a_post(client: Client, staff_user: Any) -> None:
    page = client.get(reverse("login"))
    assert page.status_code == 200 and 'name="password"' in page_text(page)
    response = client.post(
        reverse("login"), {"username": "staff", "password": "staff-pass-123"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("gallery:index")
    assert "Gallery" in page_text(response)
    assert client.get(reverse("logout")).status_code == 405  # GET never logs out
    client.post(reverse("logout"))
    assert client.get(reverse("gallery:index")).status_code == 302


def test_wrong_password_shows_an_error(client: Client, staff_user: Any) -> None:
    response = client.post(reverse("login"), {"username": "staff", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in page_text(response)


# --- CSRF, and GETs change nothing -------------------------------------------------


def test_every_post_without_a_csrf_token_is_refused(staff_user: Any) -> None:
    result = GenerationResultFactory(storage_status=S.FAILED)
    GenerationResultFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    before = snapshot()
    for url, data in post_actions(result):
        assert client.post(url, data).status_code == 403, url
    assert snapshot() == before


def test_post_with_the_csrf_token_from_the_page_works(staff_user: Any) -> None:
    result = GenerationResultFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    client.get(reverse("gallery:delete", args=[result.pk]))
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    response = client.post(
        reverse("gallery:delete", args=[result.pk]), {"csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert not GenerationResult.objects.filter(pk=result.pk).exists()


def test_gets_change_nothing(staff_client: Client) -> None:
    result = GenerationResultFactory(storage_status=S.FAILED)
    stored_result()
    lost_result()
    before = snapshot()
    for url in get_pages(result):
        staff_client.get(url)
    post_only = [
        reverse("gallery:restore", args=[result.pk]),
        reverse("gallery:bulk"),
        reverse("gallery:restore_all"),
    ]
    for url in post_only:
        assert staff_client.get(url).status_code == 405, url
    assert snapshot() == before


# --- Index ---------------------------------------------------------------------------


def test_index_shows_newest_first_with_thumbnails_and_placeholders(staff_client: Client) -> None:
    stored = stored_result(generation=GenerationFactory(prompt_text="a stored <owl>"))
    waiting = GenerationResultFactory(generation=GenerationFactory(prompt_text="a pending heron"))
    html = page_text(staff_client.get(reverse("gallery:index")))
    thumb = reverse("api:thumbnail", args=[stored.pk]) + f"?v={stored.sha256[:16]}"
    assert f'<img src="{thumb}" loading="lazy" alt="a stored &lt;owl&gt;">' in html
    assert reverse("api:thumbnail", args=[waiting.pk]) + '" loading' not in html
    assert "placeholder--pending" in html
    assert html.index("a pending heron") < html.index("a stored &lt;owl&gt;")
    assert reverse("api:image", args=[stored.pk]) + "?download=1" in html


def test_a_stored_result_without_its_thumbnail_yet_shows_a_placeholder_not_an_image(
    staff_client: Client,
) -> None:
    """The derivatives stage makes the thumbnail a moment after storing: until then the
    card shows a neutral placeholder, and its generation's page follows it."""
    waiting = mark_stored(
        GenerationResultFactory(generation=GenerationFactory(prompt_text="a harbour at dusk")),
        thumbnail=False,
    )
    for url in (
        reverse("gallery:index"),
        f"{reverse('gallery:generate')}?generation={waiting.generation_id}",
    ):
        html = page_text(staff_client.get(url))
        card = html[html.index(f'data-result-id="{waiting.pk}"') :]
        card = card[: card.index("</li>")]
        assert "<img" not in card, url
        assert 'class="placeholder placeholder--stored"' in card, url
        assert "thumbnail on its way" in card, url
    assert f'data-poll-url="{reverse("api:generation", args=[waiting.generation_id])}"' in html

    made = stored_result(generation=waiting.generation)
    GenerationResult.objects.filter(pk=waiting.pk).delete()
    shown = f"{reverse('gallery:generate')}?generation={made.generation_id}"
    html = page_text(staff_client.get(shown))
    assert "data-poll-url" not in html  # every image has its thumbnail: nothing to follow
    assert f'<img src="{made.versioned_thumbnail_url}"' in html


def test_header_counts_link_to_their_filters(staff_client: Client) -> None:
    stored_result()
    GenerationResultFactory(storage_status=S.PENDING, external_url_expires_at=None)
    GenerationResultFactory(storage_status=S.FAILED)
    GenerationResultFactory(status=GenerationResult.Status.FAILED, storage_status=S.NONE)
    GenerationResultFactory(
        storage_status=S.PENDING, external_url_expires_at=timezone.now() + timedelta(days=1)
    )
    response = staff_client.get(reverse("gallery:index"))
    counts = response.context["counts"]
    assert (counts["total"], counts["stored"], counts["pending"], counts["failed"]) == (5, 1, 2, 1)
    assert counts["none"] == 1
    assert response.context["at_risk"] == 2  # unknown expiry: pending and failed
    html = page_text(response)
    assert '?storage_status=pending"' in html and '?at_risk=1"' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("storage_status=stored", {"stored"}),
        ("storage_status=failed", {"failed"}),
        ("storage_status=none", {"broken"}),
        ("status=FAILED", {"broken"}),
        ("q=HERON", {"failed"}),
        ("at_risk=1", {"failed"}),
        ("model=MODEL", {"stored"}),
        ("storage_status=bogus", {"stored", "failed", "broken", "safe"}),
    ],
)
def test_filters_filter(staff_client: Client, query: str, expected: set[str]) -> None:
    model = ImageModelFactory()
    rows = {
        "stored": stored_result(model=model, generation=GenerationFactory(prompt_text="an owl")),
        "failed": GenerationResultFactory(
            storage_status=S.FAILED, generation=GenerationFactory(prompt_text="a grey heron")
        ),
        "broken": GenerationResultFactory(
            status=GenerationResult.Status.FAILED, storage_status=S.NONE, error_code="Bad"
        ),
        "safe": GenerationResultFactory(
            storage_status=S.PENDING, external_url_expires_at=timezone.now() + timedelta(days=1)
        ),
    }
    response = staff_client.get(
        reverse("gallery:index") + "?" + query.replace("MODEL", str(model.pk))
    )
    assert response.status_code == 200
    shown = {r.pk for r in response.context["results"]}
    assert shown == {rows[name].pk for name in expected}


def bulk_results(count: int, *, prompt: str = "a fox", **fields: Any) -> list[int]:
    """`count` pending results of one generation, made in two queries; their ids, ascending."""
    model = ImageModelFactory()
    generation = GenerationFactory(prompt_text=prompt)
    values: dict[str, Any] = {"status": "SUCCESS", "storage_status": S.PENDING, **fields}
    GenerationResult.objects.bulk_create(
        GenerationResult(generation=generation, model=model, upstream_model_id="m", **values)
        for _ in range(count)
    )
    return list(generation.results.order_by("id").values_list("pk", flat=True))


def pagination_links(html: str) -> dict[str, str]:
    """The pagination's links by their words ("Newest", "Newer", "Older"), unescaped."""
    nav = html[html.index('<nav class="pagination"') :]
    nav = nav[: nav.index("</nav>")]
    links = re.findall(r'<a class="button" href="([^"]*)"[^>]*>[^A-Za-z]*([A-Za-z]+)', nav)
    return {word: href.replace("&amp;", "&") for href, word in links}


def test_keyset_pages_walk_older_and_newer_and_keep_the_filters(staff_client: Client) -> None:
    foxes = bulk_results(30, prompt="a fox")
    bulk_results(5, prompt="a heron")  # newer, and filtered out
    index = reverse("gallery:index")

    first = staff_client.get(index + "?q=fox")
    assert [r.pk for r in first.context["results"]] == foxes[::-1][:24]
    links = pagination_links(page_text(first))
    assert set(links) == {"Older"}  # the newest page: nothing newer
    assert links["Older"] == f"{index}?q=fox&before={foxes[6]}"
    assert "Showing 24 results matching the filters, newest first." in page_text(first)

    older = staff_client.get(links["Older"])
    assert [r.pk for r in older.context["results"]] == foxes[:6][::-1]
    links = pagination_links(page_text(older))
    assert set(links) == {"Newest", "Newer"}  # the oldest page: nothing older
    assert links["Newer"] == f"{index}?q=fox&after={foxes[5]}"
    assert links["Newest"] == f"{index}?q=fox"

    newer = staff_client.get(links["Newer"])
    assert [r.pk for r in newer.context["results"]] == foxes[::-1][:24]
    assert set(pagination_links(page_text(newer))) == {"Older"}


def test_a_middle_page_links_both_ways(staff_client: Client) -> None:
    ids = bulk_results(60)
    html = page_text(staff_client.get(reverse("gallery:index") + f"?before={ids[40]}"))
    links = pagination_links(html)
    assert links["Older"].endswith(f"?before={ids[16]}")
    assert links["Newer"].endswith(f"?after={ids[39]}")
    assert "Newest" in links
    # Unfiltered, the total comes from the header counts.
    assert "Showing 24 of 60 results, newest first." in html


def test_a_cursor_past_the_end_says_so_and_links_back(staff_client: Client) -> None:
    ids = bulk_results(3)
    html = page_text(staff_client.get(reverse("gallery:index") + f"?before={ids[0]}"))
    assert "No more results this way." in html
    assert f'href="{reverse("gallery:index")}"' in html


@pytest.mark.parametrize("query", ["before=abc", "before=-4", "after=99999999999999999999999"])
def test_a_bad_cursor_shows_the_newest_page(staff_client: Client, query: str) -> None:
    ids = bulk_results(3)
    response = staff_client.get(reverse("gallery:index") + "?" + query)
    assert response.status_code == 200
    assert [r.pk for r in response.context["results"]] == ids[::-1]


def add_lighthouse_results(count: int, models: list[ImageModel]) -> None:
    generations = Generation.objects.bulk_create(
        Generation(prompt_text=f"a lighthouse, study {i}", size="2K") for i in range(count)
    )
    statuses = [S.STORED, S.PENDING, S.FAILED, S.EXPIRED]
    GenerationResult.objects.bulk_create(
        (
            GenerationResult(
                generation=g,
                model=models[i % 2],
                upstream_model_id=models[i % 2].upstream_model_id,
                status="SUCCESS",
                storage_status=statuses[i % 4],
                storage_key=f"generations/{i}.jpg" if i % 4 == 0 else "",
                thumbnail_key=f"thumbnails/{i}.webp" if i % 4 == 0 else "",
                external_url=f"https://images.example.test/{i}.jpeg",
            )
            for i, g in enumerate(generations)
        ),
        batch_size=2000,
    )


def queries_for(client: Client, url: str, *, cached_counts: bool) -> int:
    client.get(url)  # warm the session (and, unless cleared below, the header counts)
    if not cached_counts:
        cache.clear()
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    assert response.context["results"], url
    return len(captured)


def test_index_query_count_does_not_grow_with_the_number_of_results(
    staff_client: Client,
) -> None:
    models = [ImageModelFactory(), ImageModelFactory()]
    urls = ["/gallery/", "/gallery/?q=light", f"/gallery/?model={models[0].pk}"]

    def measure() -> dict[tuple[str, bool], int]:
        return {
            (url, cached): queries_for(staff_client, url, cached_counts=cached)
            for url in urls
            for cached in (False, True)
        }

    add_lighthouse_results(10, models)
    small = measure()
    add_lighthouse_results(9_990, models)
    assert GenerationResult.objects.count() == 10_000
    large = measure()
    assert large == small
    # Counting the header costs two queries, once per cache period.
    assert small[("/gallery/", False)] == small[("/gallery/", True)] + 2
    # Session, user, models, the page, its tags, the two counts, and whether a worker is
    # alive (never cached, so the warning goes the moment a worker is back).
    assert small[("/gallery/", False)] <= 8


def test_a_deep_keyset_page_costs_what_page_one_does(staff_client: Client) -> None:
    models = [ImageModelFactory(), ImageModelFactory()]
    add_lighthouse_results(3_000, models)
    ids = list(GenerationResult.objects.order_by("id").values_list("pk", flat=True))
    deep = ids[30]  # 2,970 newer results: page 124 of an OFFSET pager
    for filters in ("", "storage_status=stored&", f"model={models[1].pk}&"):
        for cached in (False, True):
            first = queries_for(staff_client, f"/gallery/?{filters}", cached_counts=cached)
            older = queries_for(
                staff_client, f"/gallery/?{filters}before={deep}", cached_counts=cached
            )
            newer = queries_for(
                staff_client, f"/gallery/?{filters}after={deep}", cached_counts=cached
            )
            assert first == older == newer, (filters, cached)
    response = staff_client.get(f"/gallery/?before={deep}")
    assert [r.pk for r in response.context["results"]] == ids[:30][::-1][:24]


@pytest.mark.django_db(transaction=True)  # the counts refresh when a change commits
def test_header_counts_are_cached_until_results_change_wherever_they_change(
    staff_client: Client,
) -> None:
    kept = GenerationResultFactory(storage_status=S.FAILED)
    doomed = GenerationResultFactory(storage_status=S.FAILED)
    restored = GenerationResultFactory(storage_status=S.FAILED)
    assert staff_client.get("/gallery/").context["counts"]["failed"] == 3

    # The counts are cached: a bare SQL update, behind every service, shows once they expire.
    GenerationResult.objects.filter(pk=kept.pk).update(storage_status=S.EXPIRED)
    assert staff_client.get("/gallery/").context["counts"]["failed"] == 3
    GenerationResult.objects.filter(pk=kept.pk).update(storage_status=S.FAILED)

    # A change made elsewhere (the admin's or the API's re-store) shows at once.
    results_restore(result_ids=[restored.pk])
    counts = staff_client.get("/gallery/").context["counts"]
    assert (counts["failed"], counts["pending"]) == (2, 1)

    # And the gallery's own actions are seen by the person who did them.
    response = staff_client.post(
        reverse("gallery:delete", args=[doomed.pk]), {"next": "/gallery/"}, follow=True
    )
    assert (response.context["counts"]["failed"], response.context["counts"]["total"]) == (1, 2)
    staff_client.post(
        reverse("gallery:bulk"), {"action": "delete", "ids": [kept.pk], "confirmed": "yes"}
    )
    counts = staff_client.get("/gallery/").context["counts"]
    assert (counts["failed"], counts["total"]) == (0, 1)


def test_clear_all_confirmation_counts_afresh(staff_client: Client) -> None:
    GenerationResultFactory.create_batch(2)
    staff_client.get("/gallery/")  # caches a total of 2
    GenerationResultFactory()
    assert "every result (3)" in page_text(staff_client.get(reverse("gallery:clear_all")))


def test_stored_images_are_linked_at_urls_the_browser_keeps_for_good(
    staff_client: Client,
) -> None:
    """A gallery opened again shows every image it showed before without asking for it."""
    with_thumbnail = stored_result(generation=GenerationFactory(prompt_text="a thumbnailed owl"))
    without = mark_stored(GenerationResultFactory(), backend="local", thumbnail=False)
    index = page_text(staff_client.get(reverse("gallery:index")))
    detail = page_text(staff_client.get(reverse("gallery:detail", args=[with_thumbnail.pk])))
    confirm = page_text(staff_client.get(reverse("gallery:delete", args=[with_thumbnail.pk])))

    # A card without its thumbnail yet shows a placeholder, never the full image.
    assert f'<img src="/api/images/{without.pk}' not in index
    sources = {
        "card thumbnail": _img_src(index, f"/api/images/{with_thumbnail.pk}/thumbnail"),
        "detail image": _img_src(detail, f"/api/images/{with_thumbnail.pk}"),
        "delete confirmation": _img_src(confirm, f"/api/images/{with_thumbnail.pk}/thumbnail"),
    }
    assert f'<a href="{sources["detail image"]}"><img' in detail
    for where, src in sources.items():
        response = staff_client.get(src)
        assert response.status_code == 200, where
        assert b"".join(response.streaming_content), where
        assert response["Cache-Control"] == "private, max-age=31536000, immutable", where


def _img_src(html: str, path: str) -> str:
    match = re.search(rf'<img src="({re.escape(path)}\?v=[0-9a-f]{{16}})"', html)
    assert match, f"no versioned <img> of {path}"
    return match[1]


# --- Detail ----------------------------------------------------------------------------


def test_detail_shows_everything_about_a_stored_result(staff_client: Client) -> None:
    result = stored_result(external_url_expires_at=timezone.now() + timedelta(hours=3))
    html = page_text(staff_client.get(reverse("gallery:detail", args=[result.pk])))
    for text in (
        reverse("api:image", args=[result.pk]),
        result.sha256,
        result.storage_key,
        result.external_url,
        "image/jpeg",
        result.model.name,
        result.generation.prompt_text,
        f"?from={result.pk}",
        f"?reference={result.pk}",
        "?download=1",
    ):
        assert text in html, text
    assert LOST_SENTENCE not in html
    assert reverse("gallery:restore", args=[result.pk]) not in html  # stored: no re-store


def test_lost_result_says_so_and_offers_no_restore(staff_client: Client) -> None:
    result = lost_result()
    html = page_text(staff_client.get(reverse("gallery:detail", args=[result.pk])))
    assert LOST_SENTENCE in html
    assert reverse("gallery:restore", args=[result.pk]) not in html
    index = page_text(staff_client.get(reverse("gallery:index")))
    assert reverse("gallery:restore", args=[result.pk]) not in index
    # A pending result whose URL has expired is lost too.
    pending = GenerationResultFactory(external_url_expires_at=timezone.now() - timedelta(minutes=5))
    html = page_text(staff_client.get(reverse("gallery:detail", args=[pending.pk])))
    assert LOST_SENTENCE in html
    # And a forged POST changes nothing.
    response = staff_client.post(reverse("gallery:restore", args=[result.pk]), follow=True)
    assert "cannot be re-stored" in page_text(response)
    result.refresh_from_db()
    assert result.storage_status == S.EXPIRED and result.storage_attempts == 0


def test_detail_of_a_missing_result_is_404(staff_client: Client) -> None:
    assert staff_client.get(reverse("gallery:detail", args=[999_999])).status_code == 404


# --- Delete --------------------------------------------------------------------------


def test_delete_asks_then_removes_the_row_and_its_stored_object(
    staff_client: Client, image_storage_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    result = stored_result()
    image_file = image_storage_root / result.storage_key
    thumb_file = image_storage_root / result.thumbnail_key
    assert image_file.is_file() and thumb_file.is_file()

    confirm = staff_client.get(reverse("gallery:delete", args=[result.pk]))
    assert "Delete 1 result?" in page_text(confirm)
    assert GenerationResult.objects.filter(pk=result.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("gallery:delete", args=[result.pk]),
            {"next": "/gallery/?q=x"},
            follow=True,
        )
    assert response.redirect_chain[0][0] == "/gallery/?q=x"
    assert f"Deleted 1 result (#{result.pk})." in page_text(response)
    assert not GenerationResult.objects.filter(pk=result.pk).exists()
    assert not image_file.exists() and not thumb_file.exists()


def test_delete_ignores_an_offsite_next(staff_client: Client) -> None:
    result = GenerationResultFactory()
    response = staff_client.post(
        reverse("gallery:delete", args=[result.pk]), {"next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("gallery:index")


def test_bulk_delete_confirms_first(
    staff_client: Client, image_storage_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    first, second = stored_result(), stored_result()
    keep = GenerationResultFactory()
    ids = [first.pk, second.pk]
    confirm = staff_client.post(reverse("gallery:bulk"), {"action": "delete", "ids": ids})
    assert confirm.status_code == 200
    assert "Delete 2 results?" in page_text(confirm)
    assert GenerationResult.objects.count() == 3

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("gallery:bulk"),
            {"action": "delete", "ids": ids, "confirmed": "yes"},
            follow=True,
        )
    assert "Deleted 2 results." in page_text(response)
    assert list(GenerationResult.objects.values_list("pk", flat=True)) == [keep.pk]
    assert not (image_storage_root / first.storage_key).exists()
    assert not (image_storage_root / second.storage_key).exists()


def test_bulk_with_nothing_selected_says_so(staff_client: Client) -> None:
    response = staff_client.post(reverse("gallery:bulk"), {"action": "delete"}, follow=True)
    assert "Select at least one result first." in page_text(response)


# --- Re-store --------------------------------------------------------------------------


def queued_tasks() -> int | None:
    """How many messages wait in this session's queue (None without Redis)."""
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        return None
    import redis

    return redis.Redis.from_url(settings.CELERY_BROKER_URL).llen(settings.CELERY_TASK_DEFAULT_QUEUE)


def test_restore_queues_a_failed_result(staff_client: Client) -> None:
    result = GenerationResultFactory(storage_status=S.FAILED, storage_error="boom")
    before = queued_tasks()
    response = staff_client.post(reverse("gallery:restore", args=[result.pk]), follow=True)
    assert f"Queued result {result.pk} for storing." in page_text(response)
    assert GenerationResult.objects.storable().filter(pk=result.pk).exists()
    if before is not None:
        assert queued_tasks() == before + 1


def test_restore_of_a_stored_result_changes_nothing(staff_client: Client) -> None:
    result = stored_result()
    response = staff_client.post(reverse("gallery:restore", args=[result.pk]), follow=True)
    assert "is stored already" in page_text(response)
    result.refresh_from_db()
    assert result.storage_status == S.STORED


def test_bulk_restore_counts_what_it_queued(staff_client: Client) -> None:
    failed = GenerationResultFactory(storage_status=S.FAILED)
    pending = GenerationResultFactory(storage_status=S.PENDING)
    stored = stored_result()
    before = queued_tasks()
    response = staff_client.post(
        reverse("gallery:bulk"),
        {"action": "restore", "ids": [failed.pk, pending.pk, stored.pk]},
        follow=True,
    )
    html = page_text(response)
    assert "Queued 2 results for storing." in html
    assert "1 selected result skipped" in html
    if before is not None:
        assert queued_tasks() == before + 2


def test_restore_everything_not_stored(staff_client: Client) -> None:
    GenerationResultFactory(storage_status=S.FAILED)
    GenerationResultFactory(storage_status=S.PENDING)
    stored_result()
    lost_result()
    response = staff_client.post(reverse("gallery:restore_all"), follow=True)
    assert "Queued 2 results for storing, newest first." in page_text(response)


# --- Clear all -------------------------------------------------------------------------


def test_clear_all_refuses_a_wrong_word(staff_client: Client) -> None:
    GenerationResultFactory.create_batch(3)
    for word in ("", "delete please", "yes", "DELET"):
        response = staff_client.post(
            reverse("gallery:clear_all"), {"confirmation": word}, follow=True
        )
        assert "Nothing was deleted" in page_text(response)
    assert GenerationResult.objects.count() == 3


def test_clear_all_with_delete_removes_everything(
    staff_client: Client, image_storage_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    stored = stored_result()
    GenerationResultFactory.create_batch(2)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("gallery:clear_all"), {"confirmation": "DELETE"}, follow=True
        )
    assert "deleted 3 results" in page_text(response)
    assert GenerationResult.objects.count() == 0
    assert Generation.objects.count() == 0
    assert not (image_storage_root / stored.storage_key).exists()


# --- Generate --------------------------------------------------------------------------


def test_generate_form_refuses_an_empty_prompt(staff_client: Client) -> None:
    model = ImageModelFactory()
    response = staff_client.post(
        reverse("gallery:generate"), {"prompt": "  ", "models": [model.pk]}
    )
    assert response.status_code == 200
    assert response.context["form"].errors["prompt"] == ["the prompt is empty"]
    assert Generation.objects.count() == 0


def test_generate_form_needs_a_model(staff_client: Client) -> None:
    response = staff_client.post(reverse("gallery:generate"), {"prompt": "a cat"})
    assert response.context["form"].errors["models"] == ["choose at least one model"]


def test_generate_form_says_which_model_needs_a_reference(staff_client: Client) -> None:
    model = ImageModelFactory(name="Editor", requires_reference=True, max_reference_images=1)
    response = staff_client.post(
        reverse("gallery:generate"), {"prompt": "make it blue", "models": [model.pk]}
    )
    assert response.context["form"].errors["reference"] == [
        "model 'Editor' needs a reference image"
    ]
    assert "model &#x27;Editor&#x27; needs a reference image" in page_text(response)
    assert Generation.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value", "error_field"),
    [
        ("custom_size", "99999x3", "custom_size"),
        ("guidance_scale", "42", "guidance_scale"),
        ("reference", "http://10.0.0.1/x.png", "reference"),
        ("reference", "result:424242", "reference"),
    ],
)
def test_generate_form_puts_input_errors_on_their_field(
    staff_client: Client, field: str, value: str, error_field: str
) -> None:
    model = ImageModelFactory()
    response = staff_client.post(
        reverse("gallery:generate"), {"prompt": "a cat", "models": [model.pk], field: value}
    )
    assert error_field in response.context["form"].errors
    assert Generation.objects.count() == 0


def seeded(upstream_id: str) -> ImageModel:
    return ImageModel.objects.get(upstream_model_id=upstream_id)


def offered_sizes(html: str, model: ImageModel) -> list[str]:
    """The values of a model's own size select, as the page offers them."""
    menu = re.search(f'<select name="size_{model.pk}".*?</select>', html, re.S)
    assert menu, f"no size select for {model.name}"
    return re.findall(r'<option value="([^"]*)"', menu.group(0))


def test_the_generate_form_offers_each_model_the_sizes_it_takes(staff_client: Client) -> None:
    html = page_text(staff_client.get(reverse("gallery:generate")))
    four, four_five = seeded("doubao-seedream-4-0-250828"), seeded("doubao-seedream-4-5-251128")
    three, edit = seeded("doubao-seedream-3-0-t2i-250415"), seeded("doubao-seededit-3-0-i2i-250628")

    assert {"1K", "2K", "4K", "1280x720", "2048x2048", "4704x3520"} <= set(
        offered_sizes(html, four)
    )
    assert "4704x3520" in offered_sizes(html, four_five)
    assert not {"1K", "1024x1024", "adaptive"} & set(offered_sizes(html, four_five))
    assert offered_sizes(html, three) == [
        "",
        "1024x1024",
        "1152x864",
        "864x1152",
        "1280x720",
        "720x1280",
        "1248x832",
        "832x1248",
        "1512x648",
    ]
    assert offered_sizes(html, edit) == ["", "adaptive"]
    assert (
        f'<label class="visually-hidden" for="id_size_{four.pk}">Size for Seedream 4.0</label>'
        in html
    )
    assert '<optgroup label="4K">' in html


def test_a_size_a_chosen_model_refuses_is_a_form_error_naming_the_model(
    staff_client: Client, demo: Any
) -> None:
    four, four_five = seeded("doubao-seedream-4-0-250828"), seeded("doubao-seedream-4-5-251128")
    three = seeded("doubao-seedream-3-0-t2i-250415")
    response = staff_client.post(
        reverse("gallery:generate"),
        {"prompt": "a kite", "models": [four.pk, four_five.pk, three.pk], "size": "1024x1024"},
    )

    errors = response.context["form"].errors["size"]
    assert errors == [
        "Seedream 4.5 does not take 1024x1024 (1,048,576 pixels, fewer than 3,686,400): it "
        "takes 2K or 4K, or WIDTHxHEIGHT of 3,686,400 to 16,777,216 pixels with an aspect "
        "ratio from 1:16 to 16:1"
    ]
    assert "Seedream 4.5 does not take 1024x1024" in page_text(response)
    assert demo.request_log == []
    assert Generation.objects.count() == 0


def test_each_chosen_model_generates_at_the_size_chosen_for_it(
    staff_client: Client, demo: Any
) -> None:
    four, four_five = seeded("doubao-seedream-4-0-250828"), seeded("doubao-seedream-4-5-251128")
    unchosen = seeded("doubao-seedream-3-0-t2i-250415")
    response = staff_client.post(
        reverse("gallery:generate"),
        {
            "prompt": "a kite over dunes",
            "models": [four.pk, four_five.pk],
            "size": "1K",
            f"size_{four_five.pk}": "2K",
            f"size_{unchosen.pk}": "1512x648",  # a model left unchosen: ignored
        },
    )

    assert response.status_code == 302, response.context["form"].errors
    generation = Generation.objects.get()
    sizes = {r.model_id: r.params_used["size"] for r in generation.results.all()}
    assert sizes == {four.pk: "1K", four_five.pk: "2K"}
    assert sorted(e["json"]["size"] for e in demo.request_log if e["method"] == "POST") == [
        "1K",
        "2K",
    ]
    # Generating again starts from the sizes used.
    again = staff_client.get(response["Location"]).context["form"]
    assert (again.initial["size"], again.initial[f"size_{four_five.pk}"]) == ("1K", "2K")


def test_generate_against_the_demo_upstream_creates_results(
    staff_client: Client, demo: Any
) -> None:
    first, second = ImageModelFactory(), ImageModelFactory()
    response = staff_client.post(
        reverse("gallery:generate"),
        {
            "prompt": "a lighthouse at dusk",
            "models": [first.pk, second.pk],
            "size": "1024x1024",
            "watermark": "on",
            "save_title": "Lighthouse",
        },
    )
    generation = Generation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('gallery:generate')}?generation={generation.pk}"
    results = list(generation.results.order_by("id"))
    assert [r.model_id for r in results] == [first.pk, second.pk]
    assert all(r.status == "SUCCESS" and r.storage_status == S.PENDING for r in results)
    assert generation.params == {"watermark": True}
    assert generation.size == "1024x1024"
    assert generation.prompt is not None and generation.prompt.title == "Lighthouse"

    page = staff_client.get(response["Location"])
    html = page_text(page)
    assert f"Generation {generation.pk}: 2 images." in html
    assert f'data-poll-url="{reverse("api:generation", args=[generation.pk])}"' in html
    for result in results:
        assert f'data-result-id="{result.pk}"' in html


def test_the_generate_page_with_its_script_generates_in_the_background(
    staff_client: Client, demo: Any
) -> None:
    """The page's script sets `background`: the page comes back before any image is
    made, running, and follows the generation; the form without it waits (above)."""
    model = ImageModelFactory()
    response = staff_client.post(
        reverse("gallery:generate"),
        {
            "prompt": "a lighthouse at dusk",
            "models": [model.pk],
            "size": "1024x1024",
            "background": "1",
        },
    )
    generation = Generation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('gallery:generate')}?generation={generation.pk}"
    assert generation.status == Generation.Status.RUNNING
    assert not generation.results.exists()
    assert [e for e in demo.request_log if e["method"] == "POST"] == []

    html = page_text(staff_client.get(response["Location"]))
    assert f"Generation {generation.pk} is running: its images appear below" in html
    assert f'data-poll-url="{reverse("api:generation", args=[generation.pk])}"' in html
    assert reverse("gallery:generation_cards", args=[generation.pk]) in html


def test_a_generations_cards_come_as_the_page_renders_them_and_act_on_the_page(
    staff_client: Client,
) -> None:
    generation = GenerationFactory(status=Generation.Status.RUNNING)
    first, second = GenerationResultFactory.create_batch(2, generation=generation)

    response = staff_client.get(reverse("gallery:generation_cards", args=[generation.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert html.index(f'data-result-id="{first.pk}"') < html.index(f'data-result-id="{second.pk}"')
    page = f"{reverse('gallery:generate')}?generation={generation.pk}"
    # A card's forms (re-store, tags, star) bring the user back to the generate page.
    assert f'name="next" value="{page}"' in html.replace("&amp;", "&")
    assert reverse("gallery:generation_cards", args=[generation.pk]) not in html
    assert staff_client.get(reverse("gallery:generation_cards", args=[999999])).status_code == 404


def test_an_interrupted_generation_says_its_images_are_all_it_received(
    staff_client: Client,
) -> None:
    generation = GenerationFactory(status=Generation.Status.INTERRUPTED)
    result = GenerationResultFactory(generation=generation)
    html = page_text(staff_client.get(f"{reverse('gallery:generate')}?generation={generation.pk}"))
    assert "Interrupted: the process calling the models stopped." in html
    assert f'data-result-id="{result.pk}"' in html


def test_generate_with_a_saved_prompt(staff_client: Client, demo: Any) -> None:
    model = ImageModelFactory()
    prompt = Prompt.objects.create(text="a saved sunrise", title="Sunrise")
    page = page_text(staff_client.get(reverse("gallery:generate")))
    assert "Sunrise: a saved sunrise" in page
    staff_client.post(
        reverse("gallery:generate"), {"saved_prompt": prompt.pk, "models": [model.pk]}
    )
    generation = Generation.objects.get()
    assert generation.prompt == prompt and generation.prompt_text == "a saved sunrise"


def test_continue_prefills_prompt_model_and_size(staff_client: Client) -> None:
    model = ImageModelFactory()
    result = GenerationResultFactory(
        model=model, generation=GenerationFactory(prompt_text="a red kite", size="2048x2048")
    )
    response = staff_client.get(reverse("gallery:generate") + f"?from={result.pk}")
    form = response.context["form"]
    assert form.initial["prompt"] == "a red kite"
    assert form.initial["models"] == [model.pk]
    assert form.initial["size"] == "2048x2048"
    html = page_text(response)
    assert ">\na red kite</textarea>" in html
    assert re.search(f'name="models" value="{model.pk}" id="id_models_\\d+" checked', html)
    assert '<option value="2048x2048" selected>' in html


def test_image_to_image_prefills_the_reference(staff_client: Client) -> None:
    result = stored_result()
    editor = ImageModelFactory(max_reference_images=1)
    text_only = ImageModelFactory(max_reference_images=0)
    response = staff_client.get(reverse("gallery:generate") + f"?reference={result.pk}")
    form = response.context["form"]
    assert form.initial["reference"] == f"result:{result.pk}"
    assert editor.pk in form.initial["models"] and text_only.pk not in form.initial["models"]
    assert f'value="result:{result.pk}"' in page_text(response)


def test_model_needing_a_reference_generates_with_one(staff_client: Client, demo: Any) -> None:
    reference = stored_result()
    editor = ImageModelFactory(requires_reference=True, max_reference_images=1)
    response = staff_client.post(
        reverse("gallery:generate"),
        {"prompt": "make it blue", "models": [editor.pk], "reference": f"result:{reference.pk}"},
    )
    assert response.status_code == 302
    generation = Generation.objects.exclude(pk=reference.generation_id).get()
    assert generation.reference_result == reference
    assert generation.results.get().status == "SUCCESS"


def test_enabled_models_only(staff_client: Client) -> None:
    ImageModelFactory(name="Shown model")
    ImageModelFactory(name="Hidden model", enabled=False)
    html = page_text(staff_client.get(reverse("gallery:generate")))
    assert "Shown model" in html and "Hidden model" not in html
    assert ImageModel.objects.filter(name="Hidden model").exists()


# --- Stars and tags ------------------------------------------------------------------


def tag_names(result: GenerationResult) -> list[str]:
    return GenerationResult.objects.get(pk=result.pk).tag_names


def test_the_star_toggles_from_a_card_and_back_to_the_page_it_came_from(
    staff_client: Client,
) -> None:
    result = GenerationResultFactory()
    index = page_text(staff_client.get(reverse("gallery:index")))
    star_form = reverse("gallery:favorite", args=[result.pk])
    assert f'action="{star_form}"' in index
    assert 'name="favorite" value="1"' in index and 'aria-pressed="false"' in index

    starred = staff_client.post(star_form, {"favorite": "1", "next": "/gallery/?q=fox"})
    assert starred["Location"] == "/gallery/?q=fox"
    assert GenerationResult.objects.get(pk=result.pk).favorite
    page = page_text(staff_client.get("/gallery/?q=fox", follow=True))
    assert f"Starred result {result.pk}." in page
    assert 'name="favorite" value="0"' in page and 'aria-pressed="true"' in page

    unstarred = staff_client.post(star_form, {"favorite": "0"}, follow=True)
    assert unstarred.redirect_chain[0][0] == reverse("gallery:detail", args=[result.pk])
    assert f"Removed the star from result {result.pk}." in page_text(unstarred)
    assert not GenerationResult.objects.get(pk=result.pk).favorite


def test_the_detail_page_stars_and_shows_tags_with_links_to_their_results(
    staff_client: Client,
) -> None:
    result = GenerationResultFactory()
    results_add_tags(result_ids=[result.pk], names=["night sky", "R&D"])
    html = page_text(staff_client.get(reverse("gallery:detail", args=[result.pk])))
    assert f'action="{reverse("gallery:favorite", args=[result.pk])}"' in html
    assert f'href="{reverse("gallery:index")}?tag=night%20sky"' in html
    assert f'href="{reverse("gallery:index")}?tag=R%26D"' in html
    assert 'aria-label="Remove the tag night sky"' in html
    assert f'action="{reverse("gallery:add_tags", args=[result.pk])}"' in html


def test_tags_typed_comma_separated_are_added_and_one_is_removed(staff_client: Client) -> None:
    result = GenerationResultFactory()
    added = staff_client.post(
        reverse("gallery:add_tags", args=[result.pk]),
        {"tags": " night  sky, harbour,, Harbour ", "next": "/gallery/"},
        follow=True,
    )
    assert added.redirect_chain[0][0] == "/gallery/"
    assert f"Tagged result {result.pk} with “night sky”, “harbour”." in page_text(added)
    assert tag_names(result) == ["harbour", "night sky"]
    card = page_text(added)
    assert f'href="{reverse("gallery:index")}?tag=harbour"' in card

    removed = staff_client.post(
        reverse("gallery:remove_tag", args=[result.pk]), {"tag": "Night Sky"}, follow=True
    )
    assert f"Removed the tag “Night Sky” from result {result.pk}." in page_text(removed)
    assert tag_names(result) == ["harbour"]
    again = staff_client.post(
        reverse("gallery:remove_tag", args=[result.pk]), {"tag": "night sky"}, follow=True
    )
    assert f"Result {result.pk} has no tag “night sky”." in page_text(again)


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("", "type at least one tag"),
        (" , ", "type at least one tag"),
        ("x" * 51, "is longer than 50 characters"),
        ("night\x07sky", "cannot hold control characters"),
    ],
)
def test_a_bad_tag_is_refused_with_the_reason_and_nothing_is_tagged(
    staff_client: Client, typed: str, words: str
) -> None:
    result = GenerationResultFactory()
    response = staff_client.post(
        reverse("gallery:add_tags", args=[result.pk]), {"tags": typed}, follow=True
    )
    text = page_text(response)
    assert f"No tag added to result {result.pk}:" in text and words in text
    assert not Tag.objects.exists()


def test_starring_or_tagging_a_missing_result_is_404(staff_client: Client) -> None:
    for name, data in [
        ("gallery:favorite", {"favorite": "1"}),
        ("gallery:add_tags", {"tags": "sky"}),
        ("gallery:remove_tag", {"tag": "sky"}),
    ]:
        assert staff_client.post(reverse(name, args=[999_999]), data).status_code == 404, name
    assert not Tag.objects.exists()


def test_bulk_stars_and_unstars_the_selection(staff_client: Client) -> None:
    one, two, other = (GenerationResultFactory() for _ in range(3))
    response = staff_client.post(
        reverse("gallery:bulk"), {"action": "favorite", "ids": [one.pk, two.pk]}, follow=True
    )
    assert "Starred 2 results." in page_text(response)
    assert set(GenerationResult.objects.filter(favorite=True)) == {one, two}
    response = staff_client.post(
        reverse("gallery:bulk"), {"action": "unfavorite", "ids": [one.pk]}, follow=True
    )
    assert "Removed the star from 1 result." in page_text(response)
    assert set(GenerationResult.objects.filter(favorite=True)) == {two}
    assert not GenerationResult.objects.get(pk=other.pk).favorite


def test_bulk_adds_and_removes_tags_on_the_selection(staff_client: Client) -> None:
    picked = [GenerationResultFactory() for _ in range(3)]
    other = GenerationResultFactory()
    ids = [r.pk for r in picked]
    added = staff_client.post(
        reverse("gallery:bulk"),
        {"action": "add_tags", "ids": ids, "tags": "dusk, harbour", "next": "/gallery/?tag=dusk"},
        follow=True,
    )
    assert added.redirect_chain[0][0] == "/gallery/?tag=dusk"
    assert "Tagged 3 results with “dusk”, “harbour”." in page_text(added)
    assert {r.pk for r in added.context["results"]} == set(ids)

    removed = staff_client.post(
        reverse("gallery:bulk"),
        {"action": "remove_tags", "ids": ids[:2], "tags": "HARBOUR"},
        follow=True,
    )
    assert "Removed “HARBOUR” from the 2 selected results." in page_text(removed)
    assert [tag_names(r) for r in picked] == [["dusk"], ["dusk"], ["dusk", "harbour"]]
    assert tag_names(other) == []

    nothing = staff_client.post(
        reverse("gallery:bulk"),
        {"action": "remove_tags", "ids": [other.pk], "tags": "dusk"},
        follow=True,
    )
    assert "None of the selected results carries “dusk”." in page_text(nothing)
    refused = staff_client.post(
        reverse("gallery:bulk"), {"action": "add_tags", "ids": ids, "tags": "  "}, follow=True
    )
    assert "No tag changed: type at least one tag." in page_text(refused)


def test_the_filter_form_shows_every_filter_with_its_value_and_errors(
    staff_client: Client,
) -> None:
    query = (
        "q=fox&tag=dusk&since=2026-01-01&until=2026-02-01&size=2048x2048&aspect=16:9"
        "&seed=42&reference=with&favorite=on"
    )
    html = page_text(staff_client.get(f"{reverse('gallery:index')}?{query}"))
    for name, value in [
        ("q", "fox"),
        ("tag", "dusk"),
        ("since", "2026-01-01"),
        ("until", "2026-02-01"),
        ("size", "2048x2048"),
        ("aspect", "16:9"),
        ("seed", "42"),
    ]:
        assert re.search(rf'name="{name}" value="{re.escape(value)}"', html), name
    assert '<option value="with" selected>' in html
    assert re.search(r'name="favorite" id="id_favorite" checked', html)
    assert "No result matches these filters." in html

    wrong = page_text(staff_client.get(f"{reverse('gallery:index')}?aspect=wide"))
    assert "Enter it as width:height, e.g. 16:9." in wrong


def test_cards_show_tags_without_a_query_per_card(staff_client: Client) -> None:
    few = [GenerationResultFactory() for _ in range(2)]
    results_add_tags(result_ids=[r.pk for r in few], names=["sky", "dusk"])
    cache.clear()
    with CaptureQueriesContext(connection) as small:
        staff_client.get(reverse("gallery:index"))
    more = [GenerationResultFactory() for _ in range(20)]
    results_add_tags(result_ids=[r.pk for r in more], names=["sky", "moon", "harbour"])
    cache.clear()
    with CaptureQueriesContext(connection) as large:
        html = page_text(staff_client.get(reverse("gallery:index")))
    assert html.count('class="tag__name"') == 2 * 2 + 20 * 3
    assert len(large) == len(small)


# --- Several reference images ----------------------------------------------------------

SEEDREAM_4 = "doubao-seedream-4-0-250828"
REFERENCE_URL = "https://images.example.test/a-reference.png"  # the demo never fetches it


def posted_images(demo: Any) -> list[Any]:
    return [entry["json"].get("image") for entry in demo.request_log if entry["method"] == "POST"]


def as_data_uri(content_type: str, data: bytes) -> str:
    import base64

    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def generate_with_references(
    client: Client, *, typed: str, uploads: list[Any], prompt: str = "the three, together"
) -> Any:
    model = ImageModel.objects.get(upstream_model_id=SEEDREAM_4)
    return client.post(
        reverse("gallery:generate"),
        {"prompt": prompt, "models": [model.pk], "reference": typed, "reference_files": uploads},
    )


def test_three_references_a_url_a_stored_result_and_an_upload_reach_the_upstream_in_one_call(
    staff_client: Client, demo: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generations.models import GenerationReference
    from storage_backends import images as image_storage
    from tests.factories import jpeg_bytes, png_bytes

    stored_bytes = jpeg_bytes(color=(10, 120, 200))
    stored = mark_stored(GenerationResultFactory(), data=stored_bytes, backend="local")
    upload_bytes = png_bytes(color=(250, 200, 0))
    upload = SimpleUploadedFile("sketch.png", upload_bytes, content_type="image/png")

    response = generate_with_references(
        staff_client, typed=f"{REFERENCE_URL} result:{stored.pk}", uploads=[upload]
    )

    assert response.status_code == 302, response.context["form"].errors
    assert posted_images(demo) == [
        [
            REFERENCE_URL,
            as_data_uri("image/jpeg", stored_bytes),  # our storage's bytes, never its URL
            as_data_uri("image/png", upload_bytes),
        ]
    ]
    generation = Generation.objects.exclude(pk=stored.generation_id).get()
    assert generation.results.get().status == "SUCCESS"
    kept = list(generation.references.order_by("position"))
    assert [(r.position, r.kind) for r in kept] == [(0, "url"), (1, "result"), (2, "upload")]
    assert (kept[0].url, kept[1].result_id) == (REFERENCE_URL, stored.pk)
    upload_row = kept[2]
    assert upload_row.sha256 == hashlib.sha256(upload_bytes).hexdigest()
    assert upload_row.content_type == "image/png"
    with image_storage.open_object(
        backend=upload_row.storage_backend, key=upload_row.storage_key
    ) as fh:
        assert fh.read() == upload_bytes
    assert isinstance(upload_row, GenerationReference)


def test_continuing_a_generation_sends_its_three_references_again(
    staff_client: Client, demo: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.factories import jpeg_bytes, webp_bytes

    stored = mark_stored(GenerationResultFactory(), data=jpeg_bytes(), backend="local")
    upload_bytes = webp_bytes()
    upload = SimpleUploadedFile("a.webp", upload_bytes, content_type="image/webp")
    generate_with_references(
        staff_client, typed=f"{REFERENCE_URL} result:{stored.pk}", uploads=[upload]
    )
    generation = Generation.objects.exclude(pk=stored.generation_id).get()
    kept_upload = generation.references.get(kind="upload")

    page = staff_client.get(reverse("gallery:generate") + f"?generation={generation.pk}")
    typed = page.context["form"].initial["reference"]
    assert typed == f"{REFERENCE_URL} result:{stored.pk} reference:{kept_upload.pk}"
    # Long after the upload: the form carries only what names the kept copy.
    response = generate_with_references(staff_client, typed=typed, uploads=[], prompt="again")

    assert response.status_code == 302, response.context["form"].errors
    first_call, second_call = posted_images(demo)
    assert second_call == first_call
    assert second_call[2] == as_data_uri("image/webp", upload_bytes)
    again = Generation.objects.get(prompt_text="again")
    assert [r.kind for r in again.references.order_by("position")] == ["url", "result", "upload"]


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("page.png", b"<!doctype html><script>alert(1)</script>", "is not a PNG, JPEG or WebP"),
        ("cut.jpg", None, "cut short"),
        ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(10 * 1024 * 1024), "at most 10 MB"),
    ],
    ids=["html", "truncated-jpeg", "over-10-mb"],
)
def test_an_upload_that_is_not_an_image_we_take_is_refused_before_any_call(
    staff_client: Client, demo: Any, name: str, data: bytes | None, words: str
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.factories import jpeg_bytes

    if data is None:
        whole = jpeg_bytes()
        data = whole[: len(whole) // 2]
    upload = SimpleUploadedFile(name, data, content_type="image/png")

    response = generate_with_references(staff_client, typed="", uploads=[upload])

    assert response.status_code == 200
    errors = response.context["form"].errors["reference_files"]
    assert any(words in error and name in error for error in errors), errors
    assert demo.request_log == []
    assert not Generation.objects.exists()


def test_more_references_than_a_model_takes_is_an_error_naming_the_model(
    staff_client: Client, demo: Any
) -> None:
    editor = ImageModelFactory(name="One-image editor", max_reference_images=1)
    response = staff_client.post(
        reverse("gallery:generate"),
        {
            "prompt": "merge them",
            "models": [editor.pk],
            "reference": f"{REFERENCE_URL} {REFERENCE_URL}?2",
        },
    )

    assert response.status_code == 200
    (error,) = response.context["form"].errors["reference"]
    assert "'One-image editor' takes at most 1 reference image (2 given)" in error
    assert demo.request_log == []


def test_clearing_the_gallery_deletes_the_uploaded_references_too(
    staff_client: Client, demo: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from storage_backends import images as image_storage
    from tests.factories import png_bytes

    upload = SimpleUploadedFile("a.png", png_bytes(), content_type="image/png")
    generate_with_references(staff_client, typed="", uploads=[upload])
    kept = Generation.objects.get().references.get()
    assert image_storage.object_exists(backend=kept.storage_backend, key=kept.storage_key)

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("gallery:clear_all"), {"confirmation": "DELETE"})

    assert not Generation.objects.exists()
    assert not image_storage.object_exists(backend=kept.storage_backend, key=kept.storage_key)


# --- Usage ---------------------------------------------------------------------------


def usage_rows_shown(html: str) -> list[list[str]]:
    rows = re.findall(r"<tr data-usage-row>(.*?)</tr>", html, flags=re.S)
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in rows
    ]


def test_the_usage_page_shows_cost_for_a_priced_model_and_no_price_for_an_unpriced_one(
    staff_client: Client,
) -> None:
    from decimal import Decimal

    priced_model = ImageModelFactory(name="Priced", price_per_image=Decimal("0.25"), currency="CNY")
    unpriced_model = ImageModelFactory(name="Unpriced", price_per_image=None)
    add_lighthouse_results(4, [priced_model, unpriced_model])

    response = staff_client.get(reverse("gallery:usage") + "?groupBy=model")

    html = page_text(response)
    assert f'href="{reverse("gallery:usage")}" aria-current="page"' in html  # in the nav
    assert usage_rows_shown(html) == [
        ["Priced", "2", "0", "0.5000 CNY"],
        ["Unpriced", "2", "0", "no price"],
    ]


def test_the_usage_page_query_count_does_not_grow_with_the_number_of_results(
    staff_client: Client,
) -> None:
    from decimal import Decimal

    models = [ImageModelFactory(price_per_image=Decimal("0.2")), ImageModelFactory()]
    urls = [reverse("gallery:usage") + f"?groupBy={group}" for group in ("day", "model", "user")]

    def measure() -> list[int]:
        counts = []
        for url in urls:
            staff_client.get(url)  # warm the session
            with CaptureQueriesContext(connection) as captured:
                assert staff_client.get(url).status_code == 200
            counts.append(len(captured))
        return counts

    add_lighthouse_results(10, models)
    small = measure()
    add_lighthouse_results(2_000, models)
    large = measure()
    assert large == small
    assert max(small) <= 4


def test_the_generate_form_sends_prompt_optimization_and_refuses_a_mode_a_model_lacks(
    staff_client: Client, demo: Any
) -> None:
    four = ImageModel.objects.get(upstream_model_id=SEEDREAM_4)
    four_five = ImageModel.objects.get(upstream_model_id="doubao-seedream-4-5-251128")
    form = {"prompt": "a fox", "size": "2048x2048", "optimize_prompt_mode": "fast"}

    refused = staff_client.post(
        reverse("gallery:generate"), {**form, "models": [four.pk, four_five.pk]}
    )
    (error,) = refused.context["form"].errors["optimize_prompt_mode"]
    assert "Seedream 4.5 does not take the prompt optimization mode fast" in error
    assert demo.request_log == []

    response = staff_client.post(reverse("gallery:generate"), {**form, "models": [four.pk]})
    assert response.status_code == 302
    (sent,) = [e["json"] for e in demo.request_log if e["method"] == "POST"]
    assert sent["optimize_prompt_options"] == {"mode": "fast"}
    again = staff_client.get(response["Location"]).context["form"]
    assert again.initial["optimize_prompt_mode"] == "fast"
