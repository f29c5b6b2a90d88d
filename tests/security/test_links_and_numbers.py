"""Links built from data, and numbers that are not numbers, as a staff member or a
script with a token meets them.

Every `href`, `src`, form target and redirect the gallery and the API hand out is a
URL of this site or an external image URL that passed the https check: a hostile
`?next=` or an upstream's `javascript:` URL from a row written before that check
existed is shown as text at most, never as a link. Every id, cursor and byte range
typed by hand is ASCII digits of a bounded length: anything else answers a clear 4xx
or the page as if it had not been given, never a 500.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from generations.models import Generation, GenerationResult, ImageModel
from tests.factories import GenerationFactory, GenerationResultFactory, mark_stored

pytestmark = [pytest.mark.security, pytest.mark.django_db]

S = GenerationResult.StorageStatus

# --- What a page may link to ---------------------------------------------------------

# Attributes a browser follows, submits to or loads from.
_URL_ATTRIBUTES = {"href", "src", "action", "formaction", "srcset", "poster", "data"}
_SCRIPT_TARGET = re.compile(
    r"""(?:href|src|action|formaction)\s*=\s*["']?\s*(?:javascript|data|vbscript):""", re.I
)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if value is None:
                continue
            if name in _URL_ATTRIBUTES or (
                name.startswith("data-") and name.endswith(("src", "href", "url"))
            ):
                self.urls.append((tag, name, value))
        # A hidden `next` is where the next POST redirects to: it is a link too.
        if tag == "input" and values.get("name") == "next" and values.get("value") is not None:
            self.urls.append((tag, "next", values["value"] or ""))


def _is_local(url: str) -> bool:
    url = url.strip()
    if not url or url.startswith(("#", "?")):  # an empty `next` means the default page
        return True
    return url.startswith("/") and not url.startswith(("//", "/\\"))


def assert_only_safe_links(
    html: str, *, external: tuple[str, ...] = ()
) -> list[tuple[str, str, str]]:
    """Every link of the page is local, or one of the checked external URLs given."""
    assert not _SCRIPT_TARGET.search(html), _SCRIPT_TARGET.search(html)
    parser = _Links()
    parser.feed(html)
    for tag, name, url in parser.urls:
        assert _is_local(url) or url in external, (tag, name, url)
    return parser.urls


def page(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def staff(staff_user: Any) -> Client:
    # Under DEBUG=False a crash is a 500 page: see it as a status, not as an exception.
    client = Client(raise_request_exception=False)
    client.force_login(staff_user)
    return client


@pytest.fixture
def bot(api_token: str) -> Client:
    return Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {api_token}")


# --- Class 1: a link target is a URL we checked -------------------------------------

HOSTILE_NEXT = [
    "javascript:alert(document.domain)",  # the reported one
    "//elsewhere.example/",  # the reported one
    "JaVaScRiPt:alert(document.domain)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "\x01javascript:alert(1)",
    "data:text/html,<script>alert(document.domain)</script>",
    "vbscript:msgbox(1)",
    "\\/\\/evil.example/",
    "/\\evil.example/",
    "\\\\evil.example/",
    "https://evil.example/",
    "http://evil.example/gallery/",
    "https:evil.example",
    "///evil.example/",
    "http://evil.example@testserver/",
    "http://testserver@evil.example/",
]


@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_the_delete_confirmation_never_links_a_hostile_next(staff: Client, hostile: str) -> None:
    result = GenerationResultFactory()
    response = staff.get(reverse("gallery:delete", args=[result.pk]), {"next": hostile})
    html = page(response)
    urls = assert_only_safe_links(html)
    # Cancel goes back to the result, the form's `next` to the gallery.
    assert ("a", "href", result.get_absolute_url()) in urls
    assert ("input", "next", reverse("gallery:index")) in urls
    assert "evil.example" not in html and "elsewhere.example" not in html


@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_the_bulk_delete_confirmation_never_links_a_hostile_next(
    staff: Client, hostile: str
) -> None:
    result = GenerationResultFactory()
    response = staff.post(
        reverse("gallery:bulk"), {"ids": [str(result.pk)], "action": "delete", "next": hostile}
    )
    html = page(response)
    urls = assert_only_safe_links(html)
    assert ("a", "href", reverse("gallery:index")) in urls
    assert ("input", "next", reverse("gallery:index")) in urls
    assert GenerationResult.objects.filter(pk=result.pk).exists()


@pytest.mark.parametrize("hostile", HOSTILE_NEXT[:6] + HOSTILE_NEXT[8:12])
@pytest.mark.parametrize(
    ("route", "data"),
    [
        ("delete", {}),
        ("restore", {}),
        ("bulk", {"action": "restore"}),
        ("bulk", {"action": "delete", "confirmed": "yes"}),
        ("restore_all", {}),
    ],
)
def test_no_redirect_follows_a_hostile_next(
    staff: Client, hostile: str, route: str, data: dict[str, str]
) -> None:
    result = GenerationResultFactory()
    args = [result.pk] if route in ("delete", "restore") else []
    response = staff.post(
        reverse(f"gallery:{route}", args=args), {**data, "ids": [str(result.pk)], "next": hostile}
    )
    assert response.status_code == 302
    assert _is_local(response["Location"]), response["Location"]


def test_a_local_next_is_kept_for_the_cancel_link_and_the_redirect(staff: Client) -> None:
    result = GenerationResultFactory()
    back = "/gallery/?storage_status=failed&q=fox"
    urls = assert_only_safe_links(
        page(staff.get(reverse("gallery:delete", args=[result.pk]), {"next": back}))
    )
    assert ("a", "href", back) in urls and ("input", "next", back) in urls
    response = staff.post(reverse("gallery:delete", args=[result.pk]), {"next": back})
    assert response.status_code == 302 and response["Location"] == back


@pytest.mark.parametrize("hostile", HOSTILE_NEXT[:3] + HOSTILE_NEXT[8:12])
def test_the_login_page_never_carries_a_hostile_next(hostile: str, staff_user: Any) -> None:
    client = Client(raise_request_exception=False)
    html = page(client.get(reverse("login"), {"next": hostile}))
    assert ("input", "next", "") in assert_only_safe_links(html)
    response = client.post(
        reverse("login"), {"username": "staff", "password": "staff-pass-123", "next": hostile}
    )
    assert response.status_code == 302
    assert _is_local(response["Location"]), response["Location"]


HOSTILE_EXTERNAL = [
    "javascript:alert(document.domain)",  # what the hostile upstream answered
    "JaVaScRiPt:alert(document.domain)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(document.domain)</script>",
    "vbscript:msgbox(1)",
    "//evil.example/x.png",
    "http://evil.example/x.png",
    "https://user:pass@evil.example/x.png",
    "https://evil.example/x.png\njavascript:alert(1)",
    "ftp://evil.example/x.png",
]


def _row_from_before_the_check(url: str, **fields: Any) -> GenerationResult:
    result: GenerationResult = GenerationResultFactory(
        generation=GenerationFactory(prompt_text="a fox from a hostile upstream"),
        external_url=url,
        image_url=url,
        external_url_expires_at=timezone.now() + timedelta(hours=6),
        storage_status=S.PENDING,
        **fields,
    )
    return result


@pytest.mark.parametrize("hostile", HOSTILE_EXTERNAL)
def test_an_unchecked_upstream_url_is_never_a_link_on_any_page(staff: Client, hostile: str) -> None:
    result = _row_from_before_the_check(hostile)
    pages = [
        reverse("gallery:detail", args=[result.pk]),
        reverse("gallery:index"),
        f"{reverse('gallery:generate')}?generation={result.generation_id}",
        f"{reverse('gallery:generate')}?from={result.pk}",
        reverse("gallery:delete", args=[result.pk]),
    ]
    for path in pages:
        assert_only_safe_links(page(staff.get(path)))


def test_a_checked_upstream_url_is_still_a_link_on_the_detail_page(staff: Client) -> None:
    url = "https://images.example.test/fine.jpeg?X-Tos-Expires=3600"
    result = _row_from_before_the_check(url)
    html = page(staff.get(reverse("gallery:detail", args=[result.pk])))
    urls = assert_only_safe_links(html, external=(url,))
    assert ("a", "href", url) in urls
    # Shown from the upstream link while it is not stored.
    assert ("img", "src", reverse("api:image", args=[result.pk])) in urls


@pytest.mark.parametrize("hostile", HOSTILE_EXTERNAL)
def test_the_api_never_returns_an_unchecked_image_url(bot: Client, hostile: str) -> None:
    result = _row_from_before_the_check(hostile)
    response = bot.get(reverse("api:generation", args=[result.generation_id]))
    assert response.status_code == 200
    (item,) = response.json()["results"]
    assert item["imageUrl"] is None
    assert item["externalImageUrl"] is None
    assert hostile not in response.content.decode()


@pytest.mark.parametrize(
    "hostile", ["javascript:alert(1)", "//evil.example/x.png", "/\\evil.example/x"]
)
def test_a_hostile_image_url_next_to_a_checked_external_url_is_dropped(
    bot: Client, hostile: str
) -> None:
    """A bundle's `imageUrl` may differ from its external URL: each one is checked."""
    good = "https://images.example.test/fine.jpeg"
    result = _row_from_before_the_check(good)
    GenerationResult.objects.filter(pk=result.pk).update(image_url=hostile)
    (item,) = bot.get(reverse("api:generation", args=[result.generation_id])).json()["results"]
    assert item["imageUrl"] is None
    assert item["externalImageUrl"] == good


def test_the_api_still_returns_checked_and_stable_urls(bot: Client) -> None:
    pending = _row_from_before_the_check("https://images.example.test/fine.jpeg")
    stored = mark_stored(GenerationResultFactory(generation=pending.generation), backend="local")
    response = bot.get(reverse("api:generation", args=[pending.generation_id]))
    items = {item["id"]: item for item in response.json()["results"]}
    assert items[pending.pk]["imageUrl"] == "https://images.example.test/fine.jpeg"
    assert items[pending.pk]["externalImageUrl"] == "https://images.example.test/fine.jpeg"
    assert items[stored.pk]["imageUrl"] == f"http://testserver/api/images/{stored.pk}"


@pytest.mark.parametrize("hostile", HOSTILE_EXTERNAL)
def test_the_image_route_never_redirects_to_an_unchecked_url(bot: Client, hostile: str) -> None:
    result = _row_from_before_the_check(hostile)
    response = bot.get(reverse("api:image", args=[result.pk]))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "Location" not in response


# --- Class 2: numbers that are not numbers -------------------------------------------

_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def arabic(number: int) -> str:
    """The same number in Arabic-Indic digits: `str.isdigit()` and `int()` take it."""
    return str(number).translate(_ARABIC_INDIC)


NOT_IDS = [
    "²",  # the reported one: isdigit() says yes, int() says no
    "9" * 5000,  # the reported one: over int()'s 4,300 digits
    "٣",
    "1_000",
    " 7",
    "7 ",
    "-3",
    "+3",
    "0",
    "9" * 20,
    "3.0",
    "0x10",
    "",
]


def _model() -> ImageModel:
    model: ImageModel = ImageModel.objects.enabled().first()
    return model


@pytest.mark.parametrize("model_ref", [v for v in NOT_IDS if v.strip() == v])
def test_model_ids_that_are_not_ids_are_a_json_400(bot: Client, model_ref: str) -> None:
    response = bot.post(
        "/api/generate",
        data=json.dumps({"prompt": "a fox", "modelIds": [model_ref]}),
        content_type="application/json",
    )
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["field"] == "modelIds"
    assert not Generation.objects.exists()


def test_a_model_id_in_other_digits_names_no_model(bot: Client) -> None:
    response = bot.post(
        "/api/generate",
        data=json.dumps({"prompt": "a fox", "modelIds": [arabic(_model().pk)]}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert not Generation.objects.exists()


@pytest.mark.parametrize("number", [2**63, 10**30, 0, -3])
def test_json_numbers_out_of_range_are_a_json_400(bot: Client, number: int) -> None:
    for body in (
        {"prompt": "a fox", "modelIds": [number]},
        {"promptId": number, "modelIds": [_model().pk]},
    ):
        response = bot.post("/api/generate", data=json.dumps(body), content_type="application/json")
        assert response.status_code == 400, (body, response.content[:300])


@pytest.mark.parametrize("raw", NOT_IDS)
def test_a_reference_that_is_not_result_id_is_a_json_400(bot: Client, raw: str) -> None:
    response = bot.post(
        "/api/generate",
        data=json.dumps({"prompt": "a fox", "modelIds": [_model().pk], "image": f"result:{raw}"}),
        content_type="application/json",
    )
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["field"] == "image"
    assert len(response.content) < 1000  # the refusal does not echo 5,000 digits back


def test_a_reference_id_in_other_digits_names_no_result(bot: Client) -> None:
    reference = mark_stored(GenerationResultFactory(), backend="local")
    response = bot.post(
        "/api/generate",
        data=json.dumps(
            {
                "prompt": "a fox",
                "modelIds": [_model().pk],
                "image": f"result:{arabic(reference.pk)}",
            }
        ),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "image"


@pytest.mark.parametrize("length", ["²", "9" * 5000, "٣", "1_000", "-3", "abc"])
def test_a_content_length_that_is_not_a_number_is_a_json_4xx(bot: Client, length: str) -> None:
    response = bot.post(
        "/api/generate", data=b"{}", content_type="application/json", CONTENT_LENGTH=length
    )
    assert 400 <= response.status_code < 500, response.status_code
    assert "error" in response.json()


@pytest.mark.parametrize("name", ["generation", "from", "reference"])
@pytest.mark.parametrize("raw", NOT_IDS)
def test_generate_page_ignores_ids_that_are_not_ids(staff: Client, name: str, raw: str) -> None:
    response = staff.get(reverse("gallery:generate"), {name: raw})
    html = page(response)
    assert 'value="result:' not in html  # no reference prefilled
    assert "Generation #" not in html
    assert_only_safe_links(html)


@pytest.mark.parametrize("name", ["generation", "from", "reference"])
def test_generate_page_does_not_read_other_digits_as_an_id(staff: Client, name: str) -> None:
    result = GenerationResultFactory(generation=GenerationFactory(prompt_text="a hidden heron"))
    number = result.generation_id if name == "generation" else result.pk
    plain = page(staff.get(reverse("gallery:generate"), {name: str(number)}))
    odd = page(staff.get(reverse("gallery:generate"), {name: arabic(number)}))
    marker = f"result:{result.pk}" if name == "reference" else "a hidden heron"
    assert marker in plain
    assert marker not in odd


@pytest.mark.parametrize("action", ["restore", "delete"])
@pytest.mark.parametrize("raw", NOT_IDS)
def test_bulk_with_ids_that_are_not_ids_selects_nothing(
    staff: Client, action: str, raw: str
) -> None:
    result = GenerationResultFactory()
    response = staff.post(
        reverse("gallery:bulk"), {"ids": [raw], "action": action, "confirmed": "yes"}, follow=True
    )
    assert "Select at least one result first." in page(response)
    assert GenerationResult.objects.filter(pk=result.pk).exists()


def test_bulk_delete_does_not_read_other_digits_as_an_id(staff: Client) -> None:
    result = GenerationResultFactory()
    staff.post(
        reverse("gallery:bulk"),
        {"ids": [arabic(result.pk)], "action": "delete", "confirmed": "yes"},
    )
    assert GenerationResult.objects.filter(pk=result.pk).exists()


@pytest.mark.parametrize("name", ["before", "after", "model"])
@pytest.mark.parametrize("raw", NOT_IDS)
def test_gallery_cursors_and_filters_that_are_not_ids_show_the_newest_page(
    staff: Client, name: str, raw: str
) -> None:
    GenerationResultFactory(generation=GenerationFactory(prompt_text="the newest heron"))
    html = page(staff.get(reverse("gallery:index"), {name: raw}))
    assert "the newest heron" in html
    assert_only_safe_links(html)


def test_a_cursor_in_other_digits_is_not_read_as_an_id(staff: Client) -> None:
    older = GenerationResultFactory(generation=GenerationFactory(prompt_text="an older heron"))
    newest = GenerationResultFactory(generation=GenerationFactory(prompt_text="the newest heron"))
    assert older.pk < newest.pk
    plain = page(staff.get(reverse("gallery:index"), {"before": str(newest.pk)}))
    assert "the newest heron" not in plain and "an older heron" in plain
    odd = page(staff.get(reverse("gallery:index"), {"before": arabic(newest.pk)}))
    assert "the newest heron" in odd


@pytest.mark.parametrize(
    "path",
    [
        "/gallery/" + "9" * 5000 + "/",
        "/gallery/" + "9" * 5000 + "/delete/",
        "/gallery/" + "9" * 20 + "/",
        "/gallery/" + "9" * 20 + "/delete/",
        "/gallery/" + "9" * 19 + "/",
        "/gallery/0/",
        "/gallery/%D9%A3/",  # Arabic-Indic three
        "/gallery/%C2%B2/",  # superscript two
    ],
)
def test_gallery_paths_with_absurd_ids_are_404(staff: Client, path: str) -> None:
    assert staff.get(path).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/images/" + "9" * 5000,
        "/api/images/" + "9" * 5000 + "/thumbnail",
        "/api/generations/" + "9" * 5000,
        "/api/images/" + "9" * 20,
        "/api/generations/" + "9" * 20,
        "/api/images/%D9%A3",
        "/api/images/%C2%B2",
    ],
)
def test_api_paths_with_absurd_ids_are_404(bot: Client, path: str) -> None:
    assert bot.get(path).status_code == 404


@pytest.fixture
def stored_image() -> tuple[GenerationResult, int]:
    result = mark_stored(GenerationResultFactory(), backend="local")
    assert result.byte_size
    return result, result.byte_size


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-" + "9" * 5000,  # the reported one
        "bytes=" + "9" * 5000 + "-",
        "bytes=-" + "9" * 5000,
        "bytes=0-" + "9" * 20,
        "bytes=" + "9" * 20 + "-",
        "bytes=²-5",
        "bytes=0-²",
        "bytes=٣-5",
        "bytes=0-1_0",
        "bytes=-",
        "bytes=5-2",
        "bytes=abc",
        "bytes=0x1-5",
    ],
)
def test_a_malformed_or_absurd_range_is_416(
    bot: Client, stored_image: tuple[GenerationResult, int], header: str
) -> None:
    result, size = stored_image
    response = bot.get(reverse("api:image", args=[result.pk]), HTTP_RANGE=header)
    assert response.status_code == 416, response.status_code
    assert response["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "  "])
def test_a_range_we_do_not_speak_sends_the_whole_image(
    bot: Client, stored_image: tuple[GenerationResult, int], header: str
) -> None:
    result, size = stored_image
    response = bot.get(reverse("api:image", args=[result.pk]), HTTP_RANGE=header)
    assert response.status_code == 200
    assert len(b"".join(response.streaming_content)) == size


def test_a_range_past_the_end_within_bounds_is_still_served(
    bot: Client, stored_image: tuple[GenerationResult, int]
) -> None:
    result, size = stored_image
    response = bot.get(reverse("api:image", args=[result.pk]), HTTP_RANGE="bytes=0-9999999999")
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes 0-{size - 1}/{size}"
