"""An image host of the test's own on loopback: it serves whatever bytes a test gives it.

For images the demo upstream does not make (a file cut short but sent whole, a hostile
PNG), served as an image host serves them: status 200, the full Content-Length.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from generations.models import GenerationResult
from tests.factories import GenerationResultFactory


@dataclass
class ImageHost:
    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)

    def result_for(self, name: str, data: bytes) -> GenerationResult:
        """A generated result whose external URL is `data`, served by this host."""
        self.files[f"/{name}"] = data
        url = f"{self.base_url}/{name}"
        result: GenerationResult = GenerationResultFactory(external_url=url, image_url=url)
        return result


@pytest.fixture
def image_host(settings: Any) -> Iterator[ImageHost]:
    host = ImageHost(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = host.files.get(self.path)
            host.served.append(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [host.base_url.split("://", 1)[1]]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
