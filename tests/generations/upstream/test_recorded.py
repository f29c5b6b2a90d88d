"""The exchanges Volcengine's documentation prints, replayed through our Ark client.

A small loopback server plays Ark: it answers each request with a recorded answer
(see recorded/README.md for where each comes from) and keeps what it was sent, so
that both halves are checked: the request we send is the documented one, and the
documented answers (JSON, streamed events, error bodies) are read as Ark means them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from generations.upstream.ark import (
    ArkClient,
    UpstreamError,
    UpstreamImage,
    UpstreamItem,
    UpstreamUsage,
)

RECORDED = Path(__file__).parent / "recorded"
GROUP_CAPABILITIES = {"text_to_image", "image_to_image", "sequential"}


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def recorded_json(name: str) -> Any:
    return json.loads(recorded(name))


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class RecordedArk:
    """Answers each POST with the next recorded answer; keeps the JSON it was sent."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        ark = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                ark.received.append(json.loads(self.rfile.read(length)))
                ark.headers.append(dict(self.headers.items()))
                answer = ark.answers.pop(0)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.content_type == "text/event-stream":
                    # Event by event, as Ark sends them.
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for event in answer.body.split(b"\n\n"):
                        if event.strip():
                            self._chunk(event + b"\n\n")
                    self._chunk(b"")
                else:
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/api/v3"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> RecordedArk:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def ark() -> Iterator[RecordedArk]:
    server = RecordedArk().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(ark: RecordedArk) -> ArkClient:
    return ArkClient(
        base_url=ark.base_url,
        api_key="ark-test-key",
        connect_timeout=2,
        read_timeout=5,
        max_retries=2,
        sleep=lambda seconds: None,
    )


def ask_for_the_documented_group(client: ArkClient, **options: Any) -> Any:
    request = recorded_json("group.request.json")
    return client.generate_answer(
        model_id=request["model"],
        prompt=request["prompt"],
        size=request["size"],
        params={"watermark": False, "max_images": 3},
        image=request["image"],
        capabilities=GROUP_CAPABILITIES,
        **options,
    )


def urls(items: list[UpstreamItem]) -> list[str]:
    return [item.url for item in items if isinstance(item, UpstreamImage)]


def test_the_documented_group_request_and_its_json_answer(
    ark: RecordedArk, client: ArkClient
) -> None:
    ark.answers.append(Answer(200, recorded("group.answer.json")))
    answer = ask_for_the_documented_group(client)

    # What we send is the documentation's request, with the answer format said aloud.
    assert ark.received == [{**recorded_json("group.request.json"), "response_format": "url"}]
    assert ark.headers[0]["Authorization"] == "Bearer ark-test-key"
    documented = recorded_json("group.answer.json")
    assert urls(answer.items) == [item["url"] for item in documented["data"]]
    assert [item.size for item in answer.items] == ["2720x1536"] * 3
    # Signed at X-Tos-Date for X-Tos-Expires seconds.
    assert {item.expires_at for item in answer.items} == {
        datetime(2025, 9, 10, 3, 32, 36, tzinfo=UTC)
    }
    assert answer.usage == UpstreamUsage(generated_images=3, output_tokens=48960)


def test_the_documented_group_streamed(ark: RecordedArk, client: ArkClient) -> None:
    ark.answers.append(Answer(200, recorded("group.stream.txt"), "text/event-stream"))
    handed: list[UpstreamItem] = []
    answer = ask_for_the_documented_group(client, stream=True, on_item=handed.append)

    assert ark.received == [
        {**recorded_json("group.request.json"), "response_format": "url", "stream": True}
    ]
    assert handed == answer.items
    assert len(urls(answer.items)) == 3
    assert [item.size for item in answer.items] == ["2496x1664"] * 3
    assert answer.usage == UpstreamUsage(generated_images=3, output_tokens=48672)


def test_a_documented_partial_failed_event_is_that_image_failing(
    ark: RecordedArk, client: ArkClient
) -> None:
    """This stream ends at `completed`, with no `[DONE]`: both endings are Ark's."""
    ark.answers.append(Answer(200, recorded("partial_failed.stream.txt"), "text/event-stream"))
    answer = ask_for_the_documented_group(client, stream=True)

    first, second, third = answer.items
    assert isinstance(first, UpstreamImage) and isinstance(second, UpstreamImage)
    assert first.size == "2048\u00d72048"  # the streaming reference writes sizes so
    assert isinstance(third, UpstreamError)
    assert third.code == "OutputImageSensitiveContentDetected"
    assert "output image may contain sensitive information" in third.message
    assert answer.usage == UpstreamUsage(generated_images=2, output_tokens=32768)


@pytest.mark.parametrize(
    ("request_file", "capabilities", "params"),
    [
        (
            "seedream3.request.json",
            {"text_to_image", "seed", "guidance_scale"},
            {"seed": 12, "guidance_scale": 2.5, "watermark": True},
        ),
        (
            "seededit.request.json",
            {"image_to_image", "image_required", "seed", "guidance_scale"},
            {"seed": 21, "guidance_scale": 5.5, "watermark": True},
        ),
    ],
)
def test_the_documented_seedream_3_and_seededit_requests(
    ark: RecordedArk,
    client: ArkClient,
    request_file: str,
    capabilities: set[str],
    params: dict[str, Any],
) -> None:
    request = recorded_json(request_file)
    ark.answers.append(Answer(200, recorded("group.answer.json")))
    answer = client.generate_answer(
        model_id=request["model"],
        prompt=request["prompt"],
        size=request["size"],
        params=params,
        image=request.get("image"),
        capabilities=capabilities,
    )

    assert ark.received == [request]
    assert len(answer.items) == 1  # one image asked for, one kept


@pytest.mark.parametrize(
    ("error_file", "status", "code", "words"),
    [
        ("error.authentication.json", 401, "AuthenticationError", "API key"),
        ("error.invalid_size.json", 400, "InvalidParameter", "at least 3686400 pixels"),
        ("error.missing_parameter.json", 400, "MissingParameter", "(param: prompt)"),
        ("error.sensitive_prompt.json", 400, "InputTextSensitiveContentDetected", "input text"),
    ],
)
def test_documented_refusals_are_failures_asked_once(
    ark: RecordedArk, client: ArkClient, error_file: str, status: int, code: str, words: str
) -> None:
    ark.answers.append(Answer(status, recorded(error_file)))
    answer = ask_for_the_documented_group(client)

    (error,) = answer.items
    assert isinstance(error, UpstreamError)
    assert error.code == code
    assert words in error.message
    assert len(ark.received) == 1
    assert answer.usage is None


@pytest.mark.parametrize("stream", [False, True])
def test_the_documented_rate_limit_is_asked_again(
    ark: RecordedArk, client: ArkClient, stream: bool
) -> None:
    ark.answers.append(Answer(429, recorded("error.rate_limit.json")))
    if stream:
        ark.answers.append(Answer(200, recorded("group.stream.txt"), "text/event-stream"))
    else:
        ark.answers.append(Answer(200, recorded("group.answer.json")))
    answer = ask_for_the_documented_group(client, stream=stream)

    assert len(urls(answer.items)) == 3
    assert len(ark.received) == 2
    assert ark.received[0] == ark.received[1]
