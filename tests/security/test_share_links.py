"""Share links as a stranger meets them: an anonymous client, no session, only the link.

A link shows exactly what was shared and nothing of the rest of the installation; an
altered, expired or revoked link opens nothing, neither the page nor any image under it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone

from generations.models import SHARE_SIGNING_SALT, GenerationResult, Share
from generations.services.organize import results_add_tags
from generations.services.sharing import share_create
from storage_backends import images as image_storage
from tests.factories import GenerationFactory, GenerationResultFactory, mark_stored

pytestmark = [pytest.mark.security, pytest.mark.django_db]


class _Page(HTMLParser):
    """The text a visitor reads and every URL the page links or loads."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.urls: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "title"):
            self._skip += 1
        for name, value in attrs:
            if name in ("href", "src", "action", "srcset") and value:
                self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.text.append(" ".join(data.split()))


def read_page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def stored(prompt: str, **fields: Any) -> GenerationResult:
    result = GenerationResultFactory(
        generation=GenerationFactory(prompt_text=prompt),
        external_url=f"https://images.example.test/UPSTREAM-{prompt[:6]}.jpeg",
        **fields,
    )
    return mark_stored(result)


def object_bytes(result: GenerationResult) -> bytes:
    with image_storage.open_object(backend=result.storage_backend, key=result.storage_key) as fh:
        return fh.read()


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def visitor() -> Client:
    """Anyone on the internet: no session, no token."""
    return Client()


def test_a_link_to_one_result_shows_its_image_and_prompt_and_nothing_else(
    staff_user: Any, visitor: Client
) -> None:
    shared = stored("SHARED a heron at dawn")
    others = [stored(f"OTHER-{n} a red fox") for n in range(3)]
    share = share_create(user=staff_user, result_ids=[shared.pk])

    response = visitor.get(share.path)

    assert response.status_code == 200
    assert not response.cookies  # no session, no CSRF cookie: nothing remembers the visitor
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"
    page = read_page(response.content.decode())
    image_url = f"/s/{share.token}/images/{shared.pk}"
    # Every word on the page: the brand, the prompt, the model, a download link.
    assert page.text == [
        "Skip to content",
        "gen",
        "vault",
        "Shared images",
        "SHARED a heron at dawn",
        f"{shared.model.name} ·",
        "Download",
    ]
    loaded = {url for url in page.urls if not url.startswith("/static/")}
    assert loaded == {"#main", image_url, f"{image_url}?download=1"}
    html = response.content.decode()
    for secret in (
        shared.storage_key,
        shared.thumbnail_key,
        shared.external_url,
        "images.example.test",
        shared.sha256,
        f"/api/images/{shared.pk}",
        *(other.generation.prompt_text for other in others),
        *(f"/images/{other.pk}" for other in others),
    ):
        assert secret not in html, secret
    # No number on the page but the result's own id inside its image URL.
    assert re.findall(r"\d+", " ".join(page.text)) == re.findall(r"\d+", shared.model.name)

    image = visitor.get(image_url)
    assert image.status_code == 200
    assert body(image) == object_bytes(shared)
    assert image["Content-Type"] == "image/jpeg"
    assert image["X-Content-Type-Options"] == "nosniff"
    assert "Location" not in image
    download = visitor.get(f"{image_url}?download=1")
    assert download["Content-Disposition"].startswith("attachment; filename=")
    for other in others:
        response = visitor.get(f"/s/{share.token}/images/{other.pk}")
        assert response.status_code == 404
        assert other.generation.prompt_text.encode() not in body(response)


def test_an_altered_link_opens_nothing(staff_user: Any, visitor: Client) -> None:
    shared = stored("a heron at dawn")
    share = share_create(user=staff_user, result_ids=[shared.pk])
    key, signature = share.token.split(":")

    def other_last(text: str) -> str:
        """The text with its last character changed (to one it is not already)."""
        return text[:-1] + ("A" if text[-1] != "A" else "B")

    flipped = other_last(signature)
    altered = [
        f"{key}:{flipped}",
        key,  # the key alone, unsigned
        f"{key}:",
        f"{other_last(key)}:{signature}",
        signing.Signer(salt="another.salt").sign(key),
        signing.Signer(key="another secret", salt=SHARE_SIGNING_SALT).sign(key),
    ]
    assert visitor.get(share.path).status_code == 200
    for token in altered:
        assert visitor.get(f"/s/{token}/").status_code == 404, token
        assert visitor.get(f"/s/{token}/images/{shared.pk}").status_code == 404, token


@pytest.mark.parametrize("ending", ["expired", "revoked"])
def test_an_expired_or_revoked_link_is_404_at_once_for_the_page_and_its_images(
    ending: str, staff_user: Any, visitor: Client, token_client: Client
) -> None:
    shared = stored("a heron at dawn")
    share = share_create(user=staff_user, result_ids=[shared.pk])
    image_url = f"/s/{share.token}/images/{shared.pk}"
    assert visitor.get(share.path).status_code == 200
    assert visitor.get(image_url).status_code == 200

    if ending == "expired":
        Share.objects.filter(pk=share.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        assert token_client.delete(f"/api/shares/{share.pk}").status_code == 200

    for url in (share.path, image_url, f"{image_url}?download=1"):
        response = visitor.get(url)
        assert response.status_code == 404, url
        assert b"heron" not in body(response)


def test_a_tag_share_does_not_grow_to_results_tagged_after_it_was_made(
    staff_user: Any, visitor: Client
) -> None:
    first, second, later = (stored(f"harbour study {n}") for n in range(3))
    results_add_tags(result_ids=[first.pk, second.pk], names=["Harbour"])
    share = share_create(user=staff_user, tag="harbour")

    results_add_tags(result_ids=[later.pk], names=["harbour"])

    page = read_page(visitor.get(share.path).content.decode())
    assert [t for t in page.text if t.startswith("harbour study")] == [
        "harbour study 1",
        "harbour study 0",
    ]
    assert visitor.get(f"/s/{share.token}/images/{later.pk}").status_code == 404
    assert visitor.get(f"/s/{share.token}/images/{first.pk}").status_code == 200


def test_a_shared_image_no_longer_stored_is_404_never_a_redirect_upstream(
    staff_user: Any, visitor: Client
) -> None:
    shared, other = stored("a heron at dawn"), stored("a grey heron")
    share = share_create(user=staff_user, result_ids=[shared.pk, other.pk])
    GenerationResult.objects.filter(pk=shared.pk).mark_not_stored(status="pending", error="")

    response = visitor.get(f"/s/{share.token}/images/{shared.pk}")
    assert response.status_code == 404
    assert "Location" not in response
    page = visitor.get(share.path).content.decode()
    assert "a grey heron" in page and "a heron at dawn" not in page


@pytest.mark.s3
def test_a_shared_image_in_a_bucket_is_streamed_under_the_link_never_a_bucket_url(
    staff_user: Any, visitor: Client, moto_s3: Any
) -> None:
    """Staff get a presigned redirect, which names the bucket and the key; a share
    link's visitor gets the bytes from the link's own URL."""
    moto_s3.use_as_active()
    shared = stored("a heron at dawn")
    assert shared.storage_backend == "s3"
    share = share_create(user=staff_user, result_ids=[shared.pk])

    response = visitor.get(f"/s/{share.token}/images/{shared.pk}")

    assert response.status_code == 200
    assert "Location" not in response
    assert body(response) == moto_s3.get(shared.storage_key)
    page = visitor.get(share.path).content.decode()
    assert moto_s3.bucket not in page and shared.storage_key not in page
