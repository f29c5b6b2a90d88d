"""A hostile upstream, met through `/api/generate`, and the demo upstream's own bounds.

An Ark impostor on loopback answers each call as a test tells it to: one byte at a
time, with more images than were asked for, with an answer too large to hold, or with
image URLs that would run a script or leave https. Whatever it does, the call ends by
its deadline, keeps no more images than were asked for, never holds more of the answer
than its limit, and keeps no URL that is not one we may link.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from django.test import Client
from django.utils.html import escape

from generations.models import GenerationResult
from generations.upstream.demo.server import BIG_CACHE_BYTES, BIG_CACHE_ENTRIES, DemoUpstream

pytestmark = [pytest.mark.security, pytest.mark.django_db]

MiB = 1024 * 1024
SEEDREAM_4 = "doubao-seedream-4-0-250828"  # takes max_images
SEEDREAM_3 = "doubao-seedream-3-0-t2i-250415"  # one image per call
GOOD_URL = "https://images.example.test/fox.jpeg"
TOTAL_TIMEOUT = 2.0
DRIP_INTERVAL = 0.05  # a whole answer takes 10-15 s this way, each byte well within 1 s

Answer = Callable[["HostileUpstream", socket.socket], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hostile: HostileUpstream

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), slow in sandboxes.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hostile = self.server.hostile
        hostile.requests += 1
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client cut the connection, as it should
            hostile.answer(hostile, self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HostileUpstream:
    """An Ark impostor on 127.0.0.1: every POST is answered by ``answer``."""

    def __init__(self) -> None:
        self.requests = 0
        self.sent = 0
        self.answer: Answer = json_answer(ark_answer([GOOD_URL]))
        self.stopped = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hostile = self
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        self.sent += len(data)

    def drip(self, sock: socket.socket, data: bytes, *, interval: float) -> None:
        for offset in range(len(data)):
            if self.stopped.is_set():
                return
            self.send(sock, data[offset : offset + 1])
            time.sleep(interval)

    def start(self) -> HostileUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()


def ark_answer(urls: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "model": SEEDREAM_4,
        "created": 1760000000,
        "data": [{"url": url, "size": "1024x1024"} for url in urls],
        "usage": {"generated_images": len(urls), "output_tokens": 4096, "total_tokens": 4096},
        **extra,
    }


def head(status: int = 200, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} Hostile", "Content-Type: application/json", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def json_answer(payload: Any, *, status: int = 200) -> Answer:
    body = json.dumps(payload).encode()
    return lambda hostile, sock: hostile.send(
        sock, head(status, Content_Length=str(len(body))) + body
    )


@pytest.fixture
def hostile(settings: Any) -> Iterator[HostileUpstream]:
    """The impostor as Ark (a key is set), with short timeouts and no http host allowed."""
    server = HostileUpstream().start()
    settings.ARK_API_KEY = "sk-hostile-test"
    settings.ARK_BASE_URL = server.base_url + "/api/v3"
    settings.ARK_CONNECT_TIMEOUT = 2.0
    settings.ARK_READ_TIMEOUT = 1.0
    settings.ARK_TOTAL_TIMEOUT = TOTAL_TIMEOUT
    settings.ARK_MAX_RETRIES = 2
    settings.IMAGE_FETCH_ALLOWED_HOSTS = []
    try:
        yield server
    finally:
        server.stop()


def generate(client: Client, **body: Any) -> list[dict[str, Any]]:
    body = {"prompt": "a fox in the snow", "modelIds": [SEEDREAM_4], **body}
    response = client.post("/api/generate", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def queued_tasks(broker: Any) -> int:
    from django.conf import settings

    with socket.create_connection(("127.0.0.1", broker.port), timeout=2) as sock:
        sock.sendall(f"LLEN {settings.CELERY_TASK_DEFAULT_QUEUE}\r\n".encode())
        reply = sock.recv(64)
    assert reply.startswith(b":"), reply
    return int(reply[1:].strip())


def assert_failed_without_a_link(result: dict[str, Any], code: str) -> GenerationResult:
    assert (result["status"], result["error"]["code"]) == ("FAILED", code), result
    assert result["imageUrl"] is None
    assert result["externalImageUrl"] is None
    assert result["storageStatus"] is None
    row = GenerationResult.objects.get(pk=result["id"])
    assert (row.external_url, row.image_url) == ("", "")
    return row


def test_the_impostor_is_believed_when_it_behaves(
    hostile: HostileUpstream, token_client: Client
) -> None:
    """The control: what is refused below is refused for what it is."""
    (result,) = generate(token_client)

    assert (result["status"], result["externalImageUrl"]) == ("SUCCESS", GOOD_URL)
    assert hostile.requests == 1


# -- a deadline on the whole call ----------------------------------------------------------


def _whole_answer_dripped(hostile: HostileUpstream, sock: socket.socket) -> None:
    body = json.dumps(ark_answer([GOOD_URL])).encode()
    hostile.drip(sock, head(Content_Length=str(len(body))) + body, interval=DRIP_INTERVAL)


def _body_dripped(hostile: HostileUpstream, sock: socket.socket) -> None:
    body = json.dumps(ark_answer([GOOD_URL])).encode()
    hostile.send(sock, head(Content_Length=str(len(body))))
    hostile.drip(sock, body, interval=DRIP_INTERVAL)


def _chunks_dripped(hostile: HostileUpstream, sock: socket.socket) -> None:
    body = json.dumps(ark_answer([GOOD_URL])).encode()
    hostile.send(sock, head(Transfer_Encoding="chunked"))
    for index in range(len(body)):
        if hostile.stopped.is_set():
            return
        hostile.send(sock, b"1\r\n" + body[index : index + 1] + b"\r\n")
        time.sleep(DRIP_INTERVAL)
    hostile.send(sock, b"0\r\n\r\n")


def _silent_after_the_headers(hostile: HostileUpstream, sock: socket.socket) -> None:
    hostile.send(sock, head(Content_Length="2000"))
    hostile.stopped.wait(30)


@pytest.mark.parametrize(
    ("answer", "read_timeout"),
    [
        pytest.param(_whole_answer_dripped, 1.0, id="one-byte-at-a-time-headers-included"),
        pytest.param(_body_dripped, 1.0, id="body-one-byte-at-a-time"),
        pytest.param(_chunks_dripped, 1.0, id="one-byte-chunks"),
        pytest.param(_silent_after_the_headers, 8.0, id="silent-after-the-headers"),
    ],
)
def test_a_dripping_upstream_is_cut_at_the_deadline_and_not_called_again(
    answer: Answer,
    read_timeout: float,
    hostile: HostileUpstream,
    token_client: Client,
    settings: Any,
) -> None:
    settings.ARK_READ_TIMEOUT = read_timeout
    hostile.answer = answer
    started = time.monotonic()
    (result,) = generate(token_client)
    elapsed = time.monotonic() - started

    assert elapsed < TOTAL_TIMEOUT + 1.5, f"the call took {elapsed:.1f} s"
    assert_failed_without_a_link(result, "UpstreamTimeout")
    assert "timed out" in result["error"]["message"]
    # The request reached the upstream and may be billed: it is not sent again.
    assert hostile.requests == 1


# -- no more images than were asked for ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        pytest.param({}, 1, id="one-image-asked"),
        pytest.param({"params": {"max_images": 4}}, 4, id="four-images-asked"),
        pytest.param({"modelIds": [SEEDREAM_3]}, 1, id="a-model-without-sequences"),
        pytest.param({"modelIds": [SEEDREAM_4, SEEDREAM_3]}, 2, id="two-models-one-each"),
    ],
)
def test_an_answer_of_200_images_keeps_only_those_asked_for(
    body: dict[str, Any],
    kept: int,
    hostile: HostileUpstream,
    token_client: Client,
    own_broker: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    urls = [f"https://images.example.test/{index}.jpeg" for index in range(200)]
    hostile.answer = json_answer(ark_answer(urls))
    before = queued_tasks(own_broker)
    with django_capture_on_commit_callbacks(execute=True):
        results = generate(token_client, **body)

    assert len(results) == kept
    assert all(r["status"] == "SUCCESS" for r in results)
    per_model = kept // len(body.get("modelIds", [SEEDREAM_4]))
    assert {r["externalImageUrl"] for r in results} == set(urls[:per_model])
    assert GenerationResult.objects.count() == kept
    assert queued_tasks(own_broker) - before == kept  # one store task per kept image


def test_an_answer_of_200_failed_items_records_one_failure(
    hostile: HostileUpstream, token_client: Client
) -> None:
    error = {"error": {"code": "OutputImageSensitiveContentDetected", "message": "no"}}
    hostile.answer = json_answer({"data": [error] * 200})

    (result,) = generate(token_client)

    assert result["error"]["code"] == "OutputImageSensitiveContentDetected"
    assert GenerationResult.objects.count() == 1


# -- no answer larger than its limit ----------------------------------------------------------


@functools.cache
def _padded_answer(megabytes: float) -> bytes:
    """A valid answer with one good image, padded to ``megabytes`` MiB."""
    padding = "x" * int(megabytes * MiB)
    return json.dumps(ark_answer([GOOD_URL], padding=padding)).encode()


def _three_mib_with_length(hostile: HostileUpstream, sock: socket.socket) -> None:
    body = _padded_answer(3)
    hostile.send(sock, head(Content_Length=str(len(body))) + body)


def _three_mib_chunked(hostile: HostileUpstream, sock: socket.socket) -> None:
    body = _padded_answer(3)
    hostile.send(sock, head(Transfer_Encoding="chunked"))
    for offset in range(0, len(body), 64 * 1024):
        piece = body[offset : offset + 64 * 1024]
        hostile.send(sock, f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    hostile.send(sock, b"0\r\n\r\n")


@functools.cache
def _gzipped_answer(megabytes: float) -> bytes:
    return gzip.compress(_padded_answer(megabytes), compresslevel=9)


def _sixty_four_mib_gzipped(hostile: HostileUpstream, sock: socket.socket) -> None:
    body = _gzipped_answer(64)  # about 64 KB on the wire
    hostile.send(sock, head(Content_Length=str(len(body)), Content_Encoding="gzip") + body)


def _declares_ten_gib(hostile: HostileUpstream, sock: socket.socket) -> None:
    hostile.send(sock, head(Content_Length=str(10 * 1024 * MiB)))
    zeros = b"0" * (256 * 1024)
    for _ in range(256):  # 64 MiB, if anyone reads that far
        hostile.send(sock, zeros)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(_three_mib_with_length, id="3-mib-with-content-length"),
        pytest.param(_three_mib_chunked, id="3-mib-chunked"),
        pytest.param(_sixty_four_mib_gzipped, id="64-mib-gzipped-to-64-kb"),
        pytest.param(_declares_ten_gib, id="declares-10-gib"),
    ],
)
def test_an_oversized_answer_is_a_failed_result(
    answer: Answer, hostile: HostileUpstream, token_client: Client
) -> None:
    _padded_answer(3), _gzipped_answer(64)  # made before the call, not while it waits
    hostile.answer = answer
    (result,) = generate(token_client)

    assert_failed_without_a_link(result, "UpstreamBadResponse")
    assert "larger than the 2 MiB" in result["error"]["message"]
    assert hostile.requests == 1
    assert hostile.sent < 16 * MiB, "the answer was read far past its limit"


# -- no image URL we may not link ---------------------------------------------------------------

REFUSED_IMAGE_URLS = [
    # Scripts.
    "javascript:alert(1)",
    "JavaScript:alert(document.domain)",
    "javascript://images.example.test/%0aalert(document.cookie)",
    "vbscript:msgbox(1)",
    # Data that a browser would render, or that was never a link to an image.
    "data:text/html,<script>alert(1)</script>",
    "data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    # Plain http, from a host that is not allowed, or no scheme at all.
    "http://elsewhere.example/x.png",
    "HTTP://ELSEWHERE.EXAMPLE/x.png",
    "http://elsewhere.example:443/x.png",
    "//elsewhere.example/x.png",
    # Only looks like https.
    " https://images.example.test/fox.jpeg",
    "https://user:secret@images.example.test/fox.jpeg",
    "https:/\\images.example.test/fox.jpeg",
]


@pytest.mark.parametrize("url", REFUSED_IMAGE_URLS)
def test_an_image_url_we_may_not_link_is_a_failed_result_with_no_link(
    url: str, hostile: HostileUpstream, token_client: Client, staff_client: Client
) -> None:
    hostile.answer = json_answer(ark_answer([url]))

    (result,) = generate(token_client)

    row = assert_failed_without_a_link(result, "UnsafeImageUrl")
    assert url not in json.dumps(result)
    assert url not in str(row.params_used) and url not in row.error_message
    page = staff_client.get(f"/gallery/{row.pk}/").content.decode()
    assert url not in page and escape(url) not in page


def test_one_refused_url_does_not_hide_the_good_images(
    hostile: HostileUpstream, token_client: Client
) -> None:
    hostile.answer = json_answer(ark_answer([GOOD_URL, "javascript:alert(1)", GOOD_URL + "?2"]))

    results = generate(token_client, params={"max_images": 3})

    assert [r["status"] for r in results] == ["SUCCESS", "FAILED", "SUCCESS"]
    assert results[1]["externalImageUrl"] is None


# -- the demo upstream keeps what it holds bounded ------------------------------------------------


@pytest.fixture
def own_demo() -> Iterator[DemoUpstream]:
    """A demo upstream of this test's own: what it holds is this test's doing alone."""
    server = DemoUpstream(host="127.0.0.1", port=0, extra_loopback_listeners=False).start()
    try:
        yield server
    finally:
        server.stop()


def demo_post(demo: DemoUpstream, body: dict[str, Any], timeout: float = 10) -> requests.Response:
    return requests.post(
        demo.api_base_url + "/images/generations",
        json={"model": SEEDREAM_4, "size": "1280x720", **body},
        headers={"Authorization": "Bearer demo"},
        timeout=timeout,
    )


def logged_bytes(demo: DemoUpstream) -> int:
    """What the demo upstream's request log holds, as it serves it."""
    return len(requests.get(demo.base_url + "/_demo/requests", timeout=30).content)


def ten_mb_reference(index: int) -> str:
    return "data:image/png;base64," + chr(ord("A") + index) * (10 * 1000 * 1000)


@pytest.mark.parametrize("as_list", [False, True], ids=["one-reference", "a-list-of-references"])
def test_ten_10_mb_image_to_image_requests_grow_the_demo_log_by_well_under_10_mib(
    own_demo: DemoUpstream, as_list: bool
) -> None:
    before = logged_bytes(own_demo)
    references = [ten_mb_reference(index) for index in range(10)]
    for reference in references:
        image: str | list[str] = [reference, "https://images.example.test/a.png"]
        response = demo_post(own_demo, {"prompt": "edit", "image": image if as_list else reference})
        assert response.status_code == 200, response.text

    grown = logged_bytes(own_demo) - before
    assert grown < 1 * MiB, f"the log grew by {grown / MiB:.1f} MiB"
    assert own_demo.stats()["requestLogBytes"] < 1 * MiB
    # What Ark received can still be told apart: each reference keeps its length and digest.
    posts = [entry["json"] for entry in own_demo.request_log if entry["method"] == "POST"]
    for logged, reference in zip(posts, references, strict=True):
        kept = logged["image"][0] if as_list else logged["image"]
        digest = hashlib.sha256(reference.encode()).hexdigest()
        assert kept.endswith(f"[{len(reference)} characters, sha256 {digest}]")
        assert kept.startswith("data:image/png;base64,")


def test_the_demo_log_keeps_the_latest_requests_only(own_demo: DemoUpstream) -> None:
    for index in range(210):
        assert demo_post(own_demo, {"prompt": f"a fox {index}"}).status_code == 200
    log = own_demo.request_log
    assert len(log) == 200
    assert (log[0]["json"]["prompt"], log[-1]["json"]["prompt"]) == ("a fox 10", "a fox 209")

    # Long prompts are kept whole (under the logged string limit), within the log's budget.
    prompt = "a fox " + "x" * (200 * 1024)
    for index in range(60):
        assert demo_post(own_demo, {"prompt": f"{prompt} {index}"}).status_code == 200
    assert own_demo.request_log[-1]["json"]["prompt"] == f"{prompt} 59"  # the newest stay
    assert logged_bytes(own_demo) <= 9 * MiB


def test_the_demo_big_image_cache_stays_bounded_over_many_sizes(own_demo: DemoUpstream) -> None:
    stats = requests.get(own_demo.base_url + "/_demo/stats", timeout=5).json()
    assert stats["cachedImages"] <= BIG_CACHE_ENTRIES  # other tests may have filled it
    for index in range(12):
        megabytes = 0.05 + index / 100
        response = demo_post(own_demo, {"prompt": f"[demo:big={megabytes}] size {index}"})
        assert response.status_code == 200, response.text

    stats = requests.get(own_demo.base_url + "/_demo/stats", timeout=5).json()
    assert stats["cachedImages"] <= BIG_CACHE_ENTRIES
    assert stats["cachedBytes"] <= BIG_CACHE_BYTES


@pytest.mark.parametrize(
    "switch",
    [
        "slow=1000000",
        "slow=999999",
        "slow=3600",
        "slow_image=99999",
        "flaky=99999999",
        "flaky_image=99999999",
        "redirect=1000000",
        "oversized=999999",
        "oversized_chunked=100000",
    ],
)
def test_a_demo_switch_past_its_maximum_is_refused_at_once(
    own_demo: DemoUpstream, switch: str
) -> None:
    started = time.monotonic()
    response = demo_post(own_demo, {"prompt": f"a fox [demo:{switch}]"}, timeout=5)

    assert time.monotonic() - started < 2
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidParameter"
    assert "supports up to" in error["message"]
