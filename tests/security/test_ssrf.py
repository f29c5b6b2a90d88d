"""Every way to point a fetch at our own network, against the fetch and through `/api/generate`.

Each URL would really reach the demo upstream (it also listens on 127.0.0.2 and ::1)
if it were fetched, so a refusal is the only thing between it and a connection. The
connection guard and the demo upstream's request log prove none was made.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from generations.fetch import AddressRefused, FetchError, fetch_to_file
from generations.models import Generation
from generations.services.storing import StoreOutcome, result_store_image
from tests.security.conftest import ConnectionGuard

pytestmark = [pytest.mark.security, pytest.mark.django_db]

# {port} is the demo upstream's; {path} a real signed image path it serves.
REFUSED_ALWAYS = [
    "https://127.0.0.1:{port}{path}",
    "https://localhost:{port}{path}",
    "https://localhost.:{port}{path}",
    "https://127.1:{port}{path}",
    "https://0:{port}{path}",
    "https://0.0.0.0:{port}{path}",
    "https://2130706433:{port}{path}",
    "https://0x7f000001:{port}{path}",
    "https://0177.0.0.1:{port}{path}",
    "https://[::1]:{port}{path}",
    "https://[::]:{port}{path}",
    "https://[::ffff:127.0.0.1]:{port}{path}",
    "https://[::ffff:7f00:1]:{port}{path}",
    "https://[::127.0.0.1]:{port}{path}",
    "https://[64:ff9b::7f00:1]:{port}{path}",
    "https://[2002:7f00:1::]:{port}{path}",
    "https://[fe80::1]:{port}{path}",
    "https://[fe80::1%25lo]:{port}{path}",
    "https://[fc00::1]/",
    "https://10.0.0.1/",
    "https://172.16.0.1/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/",
    "https://198.18.0.1/",
    "https://192.0.2.1/",
    "https://224.0.0.1/",
    "https://255.255.255.255/",
    "https://240.0.0.1/",
    "file:///etc/passwd",
    "ftp://127.0.0.1:{port}{path}",
    "gopher://127.0.0.1:6379/_PING",
    "http://example.com/a.jpeg",  # plain http only for allowed hosts: refused before DNS
    "https://user:pw@127.0.0.1:{port}{path}",
    "https://example.com@127.0.0.1:{port}{path}",
    "https://example.com\\@127.0.0.1:{port}{path}",
    "https://127.0.0.1:{port}\t{path}",
    "//127.0.0.1:{port}{path}",
    "https://127.0.0.1:/",
    "",
]
# Refused even though the demo upstream's own 127.0.0.1:PORT is allowed: the allow-list
# is matched literally, so another spelling of the same address is not in it.
REFUSED_WHEN_DEMO_ALLOWED = [
    "http://localhost:{port}{path}",
    "http://LOCALHOST:{port}{path}",
    "http://127.0.0.2:{port}{path}",
    "http://[::1]:{port}{path}",
    "http://2130706433:{port}{path}",
    "http://[::ffff:127.0.0.1]:{port}{path}",
    "http://127.0.0.1.:{port}{path}",
    "http://127.0.0.1:{port}@localhost:{port}{path}",
    "http://localhost:{port}@127.0.0.1:{port}{path}",
]


@pytest.fixture
def image_path(demo: Any) -> str:
    """A real, signed image path of the demo upstream: fetching it would succeed."""
    from generations.upstream.demo.server import StoredImage
    from tests.factories import jpeg_bytes

    image_id = demo.store_image(StoredImage(body=jpeg_bytes(), content_type="image/jpeg"))
    url = demo.signed_url(f"/images/{image_id}.jpeg", faults={})
    return url.split(str(demo.port), 1)[1]


def fill(template: str, demo: Any, path: str) -> str:
    return template.format(port=demo.port, path=path)


def fetch(url: str, allowed: list[str]) -> Any:
    return fetch_to_file(
        url, max_bytes=1 << 20, allowed_hosts=allowed, connect_timeout=2, total_timeout=5
    )


def test_the_allowed_spelling_is_fetched(demo: Any, image_path: str) -> None:
    """The control: the URLs below are refused for what they say, not because they are bad."""
    netloc = f"127.0.0.1:{demo.port}"
    fetched = fetch(f"http://{netloc}{image_path}", [netloc])
    fetched.path.unlink()
    assert fetched.byte_size > 0
    assert len(demo.request_log) == 1


@pytest.mark.parametrize("template", REFUSED_ALWAYS + REFUSED_WHEN_DEMO_ALLOWED)
def test_the_fetch_refuses_without_connecting(
    template: str, demo: Any, image_path: str, connection_guard: ConnectionGuard
) -> None:
    url = fill(template, demo, image_path)
    allowed = [] if template in REFUSED_ALWAYS else [f"127.0.0.1:{demo.port}"]
    mark = len(connection_guard.attempts)
    with pytest.raises(FetchError) as refused:
        fetch(url, allowed)
    assert isinstance(refused.value, AddressRefused) or refused.value.code == "host_not_found"
    assert connection_guard.since(mark) == [], "a connection was attempted"
    assert demo.request_log == []


def test_a_redirect_to_a_refused_address_is_not_followed(
    demo: Any, image_path: str, connection_guard: ConnectionGuard
) -> None:
    netloc = f"127.0.0.1:{demo.port}"
    sep = "&" if "?" in image_path else "?"
    # The signature covers the fault parameter: ask the demo to sign one that redirects.
    image_id = image_path.split("/images/", 1)[1].split(".", 1)[0]
    url = demo.signed_url(f"/images/{image_id}.jpeg", faults={"redirect_loopback": ""})
    assert sep  # the URL as written is used, never re-encoded
    with pytest.raises(AddressRefused):
        fetch(url, [netloc])
    assert [e["host"] for e in demo.request_log] == [netloc]  # the first hop only


# The demo upstream's own 127.0.0.1:PORT is allowed (over https too); "" means no image.
REFUSED_AS_REFERENCE = [
    t for t in REFUSED_ALWAYS + REFUSED_WHEN_DEMO_ALLOWED if t not in ("", REFUSED_ALWAYS[0])
]


@pytest.mark.parametrize("template", REFUSED_AS_REFERENCE)
def test_generate_refuses_a_reference_image_at_a_refused_address(
    template: str,
    demo: Any,
    image_path: str,
    token_client: Client,
    connection_guard: ConnectionGuard,
) -> None:
    url = fill(template, demo, image_path)
    mark = len(connection_guard.attempts)
    response = token_client.post(
        "/api/generate",
        data=json.dumps(
            {"prompt": "a fox", "modelIds": ["doubao-seedream-4-0-250828"], "image": url}
        ),
        content_type="application/json",
    )
    assert response.status_code == 400, (url, response.content)
    assert response.json()["error"]["field"] == "image"
    assert not Generation.objects.exists()
    assert demo.request_log == []  # not even the upstream was called
    assert connection_guard.since(mark) == []


@pytest.mark.parametrize("form", ["127.0.0.2", "[::1]", "localhost", "2130706433"])
def test_generate_stores_nothing_from_an_upstream_url_at_a_refused_address(
    form: str, demo: Any, token_client: Client
) -> None:
    body = token_client.post(
        "/api/generate",
        data=json.dumps(
            {
                "prompt": f"a trap [demo:host={form}]",
                "modelIds": ["doubao-seedream-4-0-250828"],
                "size": "256x256",
            }
        ),
        content_type="application/json",
    ).json()
    (result,) = body["results"]
    # Plain http from a host that is not allowed is refused as it is answered: the
    # result fails with nothing to link, and so nothing to fetch.
    assert (result["status"], result["error"]["code"]) == ("FAILED", "UnsafeImageUrl")
    assert result["externalImageUrl"] is None
    demo.clear_request_log()
    assert result_store_image(result_id=result["id"]) is StoreOutcome.SKIPPED
    assert demo.request_log == []
    assert [f"127.0.0.1:{demo.port}"] == django_settings.IMAGE_FETCH_ALLOWED_HOSTS
