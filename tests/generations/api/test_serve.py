"""The stable image route: bytes, ranges, validators, downloads and redirects.

Behind nginx (STORAGE_LOCAL_ACCEL_REDIRECT) the route only checks and names the
object; the last tests run the README's nginx block in front of a real gunicorn.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import Client
from django.utils import timezone

from generations.models import GenerationResult
from storage_backends.images import image_key, save_object_bytes, thumbnail_key
from tests.conftest import require_service, worker_environment
from tests.factories import GenerationResultFactory, jpeg_bytes, mark_stored
from tests.faults.processes import NGINX, GunicornProcess, NginxProcess

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus


@pytest.fixture
def stored() -> tuple[GenerationResult, bytes]:
    data = jpeg_bytes(320, 200)
    result = GenerationResultFactory(generation__prompt_text='A "fox" / in ../snow; rm -rf')
    key = image_key(result_id=result.pk, extension="jpg")
    save_object_bytes(backend="local", key=key, data=data)
    save_object_bytes(
        backend="local",
        key=thumbnail_key(result_id=result.pk),
        data=b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    )
    GenerationResult.objects.filter(pk=result.pk).update(
        storage_status=S.STORED,
        storage_backend="local",
        storage_key=key,
        thumbnail_key=thumbnail_key(result_id=result.pk),
        content_type="image/jpeg",
        byte_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        image_url=f"/api/images/{result.pk}",
    )
    result.refresh_from_db()
    return result, data


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_serves_the_bytes_with_validators(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, data = stored
    response = staff_client.get(f"/api/images/{result.pk}")
    assert response.status_code == 200
    assert body(response) == data
    assert response["Content-Type"] == "image/jpeg"
    assert response["Content-Length"] == str(len(data))
    assert response["ETag"] == f'"{result.sha256}"'
    assert "max-age" in response["Cache-Control"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Accept-Ranges"] == "bytes"


def test_if_none_match_answers_304(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    response = staff_client.get(f"/api/images/{result.pk}", HTTP_IF_NONE_MATCH=f'"{result.sha256}"')
    assert response.status_code == 304
    assert response.content == b""
    other = staff_client.get(f"/api/images/{result.pk}", HTTP_IF_NONE_MATCH='"something-else"')
    assert other.status_code == 200


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None)],
)
def test_range_requests_get_206(
    staff_client: Client,
    stored: tuple[GenerationResult, bytes],
    header: str,
    start: int,
    end: int | None,
) -> None:
    result, data = stored
    response = staff_client.get(f"/api/images/{result.pk}", HTTP_RANGE=header)
    assert response.status_code == 206
    expected = data[start : (end + 1 if end is not None else None)]
    assert body(response) == expected
    assert response["Content-Length"] == str(len(expected))
    first = start if start >= 0 else len(data) + start
    assert response["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"


def test_unsatisfiable_range_gets_416(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, data = stored
    response = staff_client.get(f"/api/images/{result.pk}", HTTP_RANGE=f"bytes={len(data) + 10}-")
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(data)}"


def test_download_has_a_safe_file_name(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    response = staff_client.get(f"/api/images/{result.pk}?download=1")
    disposition = response["Content-Disposition"]
    assert disposition == f'attachment; filename="genvault-{result.pk}-a-fox-in-snow-rm-rf.jpg"'


def test_thumbnail_is_served(staff_client: Client, stored: tuple[GenerationResult, bytes]) -> None:
    result, _ = stored
    response = staff_client.get(f"/api/images/{result.pk}/thumbnail")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"


def test_not_stored_redirects_to_the_external_url_until_it_expires(staff_client: Client) -> None:
    result = GenerationResultFactory(external_url_expires_at=timezone.now() + timedelta(hours=1))
    response = staff_client.get(f"/api/images/{result.pk}")
    assert response.status_code == 302
    assert response["Location"] == result.external_url

    GenerationResult.objects.filter(pk=result.pk).update(
        external_url_expires_at=timezone.now() - timedelta(minutes=1)
    )
    response = staff_client.get(f"/api/images/{result.pk}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_missing_object_and_unknown_ids_get_404(
    staff_client: Client, stored: tuple[GenerationResult, bytes], image_storage_root: Any
) -> None:
    result, _ = stored
    (image_storage_root / result.storage_key).unlink()
    assert staff_client.get(f"/api/images/{result.pk}").status_code == 404
    assert staff_client.get("/api/images/987654").status_code == 404
    failed = GenerationResultFactory(
        status=GenerationResult.Status.FAILED, external_url="", image_url=""
    )
    assert staff_client.get(f"/api/images/{failed.pk}").status_code == 404


def test_anonymous_cannot_read_images(
    client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    response = client.get(f"/api/images/{result.pk}")
    assert response.status_code == 401
    assert b"\xff\xd8" not in response.content


# --- Versioned URLs: what the gallery links, kept by the browser for good ------------

IMMUTABLE = "private, max-age=31536000, immutable"


@pytest.mark.parametrize("path", ["", "/thumbnail"])
def test_a_versioned_url_may_be_kept_for_good_and_the_stable_one_may_not(
    staff_client: Client, stored: tuple[GenerationResult, bytes], path: str
) -> None:
    result, data = stored
    url = f"/api/images/{result.pk}{path}"

    versioned = staff_client.get(f"{url}?v={result.image_version}")
    assert versioned.status_code == 200
    assert versioned["Cache-Control"] == IMMUTABLE
    kept = body(versioned)
    full = staff_client.get(f"{url}?v={result.sha256}")
    assert full["Cache-Control"] == IMMUTABLE
    assert body(full) == kept

    stable = staff_client.get(url)
    assert stable["Cache-Control"] == "private, max-age=86400"
    assert body(stable) == kept
    if not path:
        assert kept == data


def test_a_versioned_revalidation_or_range_stays_immutable(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, data = stored
    url = f"/api/images/{result.pk}?v={result.image_version}"
    not_modified = staff_client.get(url, HTTP_IF_NONE_MATCH=f'"{result.sha256}"')
    assert not_modified.status_code == 304
    assert not_modified["Cache-Control"] == IMMUTABLE
    part = staff_client.get(url, HTTP_RANGE="bytes=0-9")
    assert part.status_code == 206
    assert body(part) == data[:10]
    assert part["Cache-Control"] == IMMUTABLE


@pytest.mark.parametrize(
    "version",
    [
        "0" * 16,  # other bytes than the stored ones
        "SHA",  # not a hash at all
        "",
    ],
)
def test_a_version_that_does_not_name_the_stored_bytes_is_answered_as_the_stable_url(
    staff_client: Client, stored: tuple[GenerationResult, bytes], version: str
) -> None:
    result, data = stored
    response = staff_client.get(f"/api/images/{result.pk}?v={version}")
    assert response.status_code == 200
    assert body(response) == data
    assert response["Cache-Control"] == "private, max-age=86400"


def test_a_prefix_too_short_to_name_the_bytes_is_not_a_version(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    response = staff_client.get(f"/api/images/{result.pk}?v={result.sha256[:4]}")
    assert body(response)
    assert response["Cache-Control"] == "private, max-age=86400"


def test_after_a_re_store_with_other_bytes_the_old_version_is_no_longer_immutable(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    old_version = result.image_version
    new_data = jpeg_bytes(320, 200, color=(200, 10, 10))
    save_object_bytes(backend="local", key=result.storage_key, data=new_data)
    GenerationResult.objects.filter(pk=result.pk).update(
        sha256=hashlib.sha256(new_data).hexdigest(), byte_size=len(new_data)
    )
    result.refresh_from_db()
    assert result.image_version != old_version

    stale = staff_client.get(f"/api/images/{result.pk}?v={old_version}")
    assert body(stale) == new_data
    assert stale["Cache-Control"] == "private, max-age=86400"
    fresh = staff_client.get(result.versioned_url)
    assert body(fresh) == new_data
    assert fresh["Cache-Control"] == IMMUTABLE


def test_a_result_not_stored_has_no_versioned_url_and_a_version_changes_nothing(
    staff_client: Client,
) -> None:
    result = GenerationResultFactory(external_url_expires_at=timezone.now() + timedelta(hours=1))
    assert result.versioned_url == f"/api/images/{result.pk}"
    response = staff_client.get(f"/api/images/{result.pk}?v={'a' * 16}")
    assert response.status_code == 302
    assert response["Cache-Control"] == "no-store"


# --- Behind nginx: X-Accel-Redirect hands the bytes to nginx ---------------------------


@pytest.fixture
def behind_nginx(settings: Any) -> None:
    settings.STORAGE_LOCAL_ACCEL_REDIRECT = "/protected/"


@pytest.mark.usefixtures("behind_nginx")
def test_behind_nginx_a_checked_request_names_the_object_for_nginx_to_send(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    response = staff_client.get(f"/api/images/{result.pk}", HTTP_RANGE="bytes=0-9")
    assert response.status_code == 200  # nginx answers the range
    assert response.content == b""
    assert response["X-Accel-Redirect"] == f"/protected/{result.storage_key}"
    assert response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "private, max-age=86400"
    assert response["Content-Disposition"] == "inline"
    assert response["X-Content-Type-Options"] == "nosniff"

    download = staff_client.get(f"/api/images/{result.pk}?download=1&v={result.image_version}")
    assert download["X-Accel-Redirect"] == f"/protected/{result.storage_key}"
    assert download["Cache-Control"] == IMMUTABLE
    assert download["Content-Disposition"].startswith("attachment; filename=")

    thumbnail = staff_client.get(f"/api/images/{result.pk}/thumbnail")
    assert thumbnail["X-Accel-Redirect"] == f"/protected/{result.thumbnail_key}"
    assert thumbnail["Content-Type"] == "image/webp"


@pytest.mark.usefixtures("behind_nginx")
def test_behind_nginx_nothing_is_named_for_a_refused_request_or_a_key_we_never_make(
    client: Client, staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    anonymous = client.get(f"/api/images/{result.pk}")
    assert anonymous.status_code == 401
    assert "X-Accel-Redirect" not in anonymous

    GenerationResult.objects.filter(pk=result.pk).update(storage_key="../../etc/passwd")
    hostile = staff_client.get(f"/api/images/{result.pk}")
    assert "X-Accel-Redirect" not in hostile
    assert hostile.status_code in (400, 404)


def test_without_the_setting_the_bytes_are_sent_by_us(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, data = stored
    response = staff_client.get(f"/api/images/{result.pk}")
    assert "X-Accel-Redirect" not in response
    assert body(response) == data


# --- Behind a real nginx: the README's block in front of gunicorn ----------------------

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_nginx_server(*, upstream: str, media_root: str) -> str:
    """The README's nginx block, pointed at this test's gunicorn and storage folder."""
    match = re.search(r"```nginx\n(.*?)```", README.read_text(), re.S)
    assert match, "the README has no nginx block"
    block = match[1]
    for documented, ours in (
        ("http://127.0.0.1:8000", upstream),
        ("/srv/genvault/media/", f"{media_root.rstrip('/')}/"),
        ("location /protected/", "location /protected/"),
        ("listen 80;", "listen 80;"),  # NginxProcess puts its own port there
    ):
        assert documented in block, documented
        block = block.replace(documented, ours)
    return block


@pytest.fixture
def nginx_in_front(settings: Any, transactional_db: Any, tmp_path: Path) -> Iterator[str]:
    """nginx's URL, in front of gunicorn with STORAGE_LOCAL_ACCEL_REDIRECT=/protected/."""
    require_service(Path(NGINX).is_file(), "nginx is not installed (apt-get install nginx)")
    env = worker_environment(settings, STORAGE_LOCAL_ACCEL_REDIRECT="/protected/")
    gunicorn = GunicornProcess(env, tmp_path / "gunicorn.log", workers=1)
    nginx = None
    try:
        gunicorn.wait_ready()
        server = readme_nginx_server(upstream=gunicorn.url, media_root=str(settings.MEDIA_ROOT))
        nginx = NginxProcess(tmp_path / "nginx", server)
        nginx.wait_ready()
        yield nginx.url
    finally:
        if nginx is not None:
            nginx.stop()
        gunicorn.stop()


@pytest.mark.nginx
@pytest.mark.django_db(transaction=True)
def test_behind_nginx_the_bytes_ranges_and_revalidation_come_from_nginx(
    nginx_in_front: str, api_token: str
) -> None:
    data = jpeg_bytes(640, 480, color=(20, 120, 220))
    result = mark_stored(GenerationResultFactory(), data=data, backend="local")
    auth = {"Authorization": f"Bearer {api_token}"}
    url = f"{nginx_in_front}/api/images/{result.pk}"

    whole = requests.get(url, headers=auth, timeout=10)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["Content-Type"] == "image/jpeg"
    assert whole.headers["Cache-Control"] == "private, max-age=86400"
    assert whole.headers["Content-Disposition"] == "inline"
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    assert whole.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert "X-Accel-Redirect" not in whole.headers
    # nginx's own validators (the file's mtime and size), not the route's SHA-256: the
    # bytes came from nginx, and gunicorn only checked the request.
    assert "Last-Modified" in whole.headers
    assert whole.headers["ETag"] != f'"{result.sha256}"'

    part = requests.get(url, headers={**auth, "Range": "bytes=100-1099"}, timeout=10)
    assert part.status_code == 206
    assert part.content == data[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"

    validator = {"If-None-Match": whole.headers["ETag"]}
    again = requests.get(url, headers={**auth, **validator}, timeout=10)
    assert again.status_code == 304
    assert again.content == b""

    versioned = requests.get(f"{url}?v={result.image_version}", headers=auth, timeout=10)
    assert versioned.content == data
    assert versioned.headers["Cache-Control"] == "private, max-age=31536000, immutable"

    thumbnail = requests.get(f"{url}/thumbnail", headers=auth, timeout=10)
    assert thumbnail.status_code == 200
    assert thumbnail.headers["Content-Type"] == "image/webp"
    assert thumbnail.content.startswith(b"RIFF")


@pytest.mark.nginx
@pytest.mark.django_db(transaction=True)
def test_behind_nginx_no_image_reaches_a_request_without_a_login(
    nginx_in_front: str, image_storage_root: Path
) -> None:
    data = jpeg_bytes(640, 480, color=(220, 120, 20))
    result = mark_stored(GenerationResultFactory(), data=data, backend="local")

    for url in (
        f"{nginx_in_front}/api/images/{result.pk}",
        f"{nginx_in_front}/api/images/{result.pk}/thumbnail",
        f"{nginx_in_front}/api/images/{result.pk}?v={result.image_version}&download=1",
        # The internal location itself, asked for directly: nginx never serves it so.
        f"{nginx_in_front}/protected/{result.storage_key}",
        f"{nginx_in_front}/protected/{result.thumbnail_key}",
    ):
        response = requests.get(url, headers={"Range": "bytes=0-"}, timeout=10)
        assert response.status_code in (401, 404), url
        assert b"\xff\xd8" not in response.content, url
        assert b"WEBP" not in response.content, url
        assert "X-Accel-Redirect" not in response.headers, url
