"""Path traversal and odd input wherever input reaches storage, the file system or the
database; oversized and malformed JSON; the headers of the image route.

Whatever is sent, the answer is a clear 4xx (JSON for the API), never a 500, and
nothing outside the storage folder is ever read or written.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from generations.models import Generation, GenerationResult
from tests.factories import png_bytes
from tests.security.conftest import World, stored_result

pytestmark = [pytest.mark.security, pytest.mark.django_db]

HUGE = "9" * 30


@pytest.mark.parametrize(
    "path",
    [
        f"/api/images/{HUGE}",
        f"/api/images/{HUGE}/thumbnail",
        f"/api/generations/{HUGE}",
        f"/api/results/{HUGE}",
        f"/api/results?cursor={HUGE}",
        f"/api/results?model={HUGE}&seed={HUGE}&limit={HUGE}",
        "/api/results?q=%00%ff&tag=%00&storage=../../etc",
        "/api/results?since=99999-01-01&until=9999-12-31",
        "/api/images/0",
        "/api/images/-1",
        "/api/images/1.5",
        "/api/images/..%2f..%2fetc%2fpasswd",
        "/api/images/%2e%2e/%2e%2e/etc/passwd",
        "/api/images/1/../../../etc/passwd",
        "/api/images/%00",
        f"/gallery/{HUGE}/",
        "/gallery/..%2f/",
        "/gallery/?page=abc",
        f"/gallery/?page={HUGE}",
        "/gallery/?page=-1",
        f"/gallery/?model={HUGE}",
        "/gallery/?storage_status=../../etc&status=%00&q=%00%ff",
        "/gallery/?q=" + "x" * 5000,
        f"/generate/?from={HUGE}",
        f"/generate/?generation={HUGE}",
        f"/generate/?reference={HUGE}",
        "/generate/?from=../1&reference=%00",
    ],
)
def test_odd_ids_and_parameters_get_a_clear_answer(path: str, world: World) -> None:
    response = world.callers["staff_session"]().get(path)
    assert response.status_code in (200, 302, 400, 404), (path, response.status_code)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"root:" not in body


def post_json(client: Client, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/api/generate", data=data, content_type="application/json", **extra)


GOOD = {"prompt": "a fox", "modelIds": ["doubao-seedream-4-0-250828"], "size": "1280x720"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"a fox"',
        b"1e999999",
        b"\xff\xfe\x00{",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        {**GOOD, "prompt": "a\x00fox"},
        {**GOOD, "prompt": "x" * 5000},
        {**GOOD, "prompt": ["a fox"]},
        {**GOOD, "modelIds": ["doubao\x00seedream"]},
        {**GOOD, "modelIds": [int(HUGE)]},
        {**GOOD, "modelIds": "doubao-seedream-4-0-250828"},
        {**GOOD, "modelIds": [{"$ne": 1}]},
        {**GOOD, "size": "../../etc/passwd"},
        {**GOOD, "size": "99999x99999"},
        {**GOOD, "params": {"seed": 10**40}},
        {**GOOD, "params": {"guidance_scale": float("nan")}},
        {**GOOD, "params": {"__class__": 1}},
        {**GOOD, "image": "result:../../etc/passwd"},
        {**GOOD, "image": f"result:{HUGE}"},
        {**GOOD, "image": "file:///etc/passwd"},
        {**GOOD, "image": "https://example.com/a\x00.jpg"},
        {**GOOD, "image": "data:image/png;base64"},
        {"promptId": int(HUGE), "modelIds": GOOD["modelIds"]},
        {"promptId": "1", "modelIds": GOOD["modelIds"]},
        {**GOOD, "storageKey": "../../etc/passwd"},
    ],
    ids=lambda b: repr(b)[:60],
)
def test_malformed_or_hostile_json_is_a_json_400(
    body: Any, token_client: Client, demo: Any
) -> None:
    response = post_json(token_client, body)
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert set(response.json()["error"]) >= {"code", "message"}
    assert not Generation.objects.exists()
    assert demo.request_log == []


def test_an_oversized_body_is_refused_with_json(token_client: Client) -> None:
    response = token_client.generic(
        "POST",
        "/api/generate",
        data=b"{}",
        content_type="application/json",
        HTTP_CONTENT_LENGTH=str(64 * 1024 * 1024),
        CONTENT_LENGTH=str(64 * 1024 * 1024),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_a_large_reference_image_within_the_limit_is_accepted(
    token_client: Client, demo: Any
) -> None:
    """A 3 MB data: URI is within the API's documented 16 MB body and Ark's 10 MB image."""
    import base64

    from tests.generations.sample_images import noise_image_bytes

    png = noise_image_bytes("PNG", (1200, 1200))
    assert len(png) > 3 * 1024 * 1024
    payload = base64.b64encode(png).decode()
    response = post_json(token_client, {**GOOD, "image": f"data:image/png;base64,{payload}"})
    assert response.status_code == 200, response.content[:300]


def test_the_wrong_content_type_is_a_json_415(token_client: Client) -> None:
    response = token_client.post("/api/generate", data="prompt=x", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_a_download_name_never_carries_what_the_prompt_says(db: Any, token_client: Client) -> None:
    result = stored_result(prompt='../../etc/passwd"; x=\r\nSet-Cookie: a=b <svg> ünï 名前')
    response = token_client.get(f"/api/images/{result.pk}?download=1")
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert re.fullmatch(
        rf'attachment; filename="genvault-{result.pk}-[a-z0-9-]*\.jpg"', disposition
    ), disposition
    assert "Set-Cookie" not in response
    assert all("\n" not in v and "\r" not in v for _k, v in response.items())


@pytest.mark.parametrize("key", ["../../../../etc/passwd", "/etc/passwd", "generations/../../x"])
def test_a_row_with_a_hostile_storage_key_never_serves_outside_storage(
    key: str, db: Any, token_client: Client, image_storage_root: Path
) -> None:
    result = stored_result()
    GenerationResult.objects.filter(pk=result.pk).update(storage_key=key, thumbnail_key=key)
    for path in (f"/api/images/{result.pk}", f"/api/images/{result.pk}/thumbnail"):
        response = token_client.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert b"root:" not in body


def test_image_route_headers_come_from_the_sniffed_bytes(demo: Any, token_client: Client) -> None:
    from generations.services.storing import StoreOutcome, result_store_image

    body = post_json(token_client, {**GOOD, "prompt": "a mislabelled fox [demo:wrong_type]"})
    result_id = body.json()["results"][0]["id"]
    assert result_store_image(result_id=result_id) is StoreOutcome.STORED
    response = token_client.get(f"/api/images/{result_id}")
    assert response["Content-Type"] == "image/png"  # served as image/jpeg upstream
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content)[:8] == png_bytes()[:8]


def test_an_svg_is_never_served_inline(
    db: Any, demo: Any, token_client: Client, image_storage_root: Path
) -> None:
    """Upstream SVG is refused; and a row that says SVG (an edited or imported row) is
    still never served as an SVG document on our origin."""
    from generations.services.storing import StoreOutcome, result_store_image

    refused = post_json(token_client, {**GOOD, "prompt": "a trap [demo:svg]"})
    refused_id = refused.json()["results"][0]["id"]
    assert result_store_image(result_id=refused_id) is StoreOutcome.FAILED
    assert not list(image_storage_root.rglob("*.svg"))

    result = stored_result()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    (image_storage_root / result.storage_key).write_bytes(svg)
    GenerationResult.objects.filter(pk=result.pk).update(
        content_type="image/svg+xml", byte_size=len(svg)
    )
    response = token_client.get(f"/api/images/{result.pk}")
    assert "svg" not in response["Content-Type"]
    assert response["X-Content-Type-Options"] == "nosniff"


# --- import bundles --------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "../evil.txt",
        "images/../../evil.txt",
        "images/generations/../../../evil.txt",
        "/tmp/evil.txt",
        "images\\..\\..\\evil.txt",
        "C:/evil.txt",
        "images/generations/1.jpg/../../../evil.txt",
    ],
)
def test_an_import_bundle_with_a_traversing_entry_is_refused_whole(
    entry: str, db: Any, tmp_path: Path, image_storage_root: Path
) -> None:
    bundle = tmp_path / "bundle.zip"
    export = {"version": 1, "exportedAt": "2026-01-01T00:00:00Z", "prompts": [], "models": []}
    export["generations"] = []
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("export.json", json.dumps(export))
        archive.writestr("manifest.json", json.dumps({"images": {}}))
        archive.writestr(entry, b"owned")
    with pytest.raises(CommandError, match="refused"):
        call_command("import_backup", str(bundle), verbosity=0)
    assert not list(tmp_path.parent.rglob("evil.txt"))
    assert not list(image_storage_root.rglob("*"))
    assert not Generation.objects.exists()


def test_an_import_bundle_with_a_foreign_storage_key_is_refused(
    db: Any, tmp_path: Path, image_storage_root: Path
) -> None:
    bundle = tmp_path / "bundle.json"
    bundle.write_text(
        json.dumps(
            {
                "version": 1,
                "exportedAt": "2026-01-01T00:00:00Z",
                "prompts": [],
                "models": [],
                "generations": [
                    {
                        "id": 1,
                        "prompt": "x",
                        "results": [
                            {"id": 1, "storageStatus": "stored", "storageKey": "../../etc/passwd"}
                        ],
                    }
                ],
            }
        )
    )
    with pytest.raises(CommandError, match="refused"):
        call_command("import_backup", str(bundle), verbosity=0)
    assert not Generation.objects.exists()
