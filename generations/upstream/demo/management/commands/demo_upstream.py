"""Serve the demo upstream: an Ark-compatible image API that renders images locally.

genvault talks to it whenever ``ARK_API_KEY`` is not set (and for models whose provider
is ``demo``), so the whole product works offline; tests and benchmarks use its fault
switches (see ``generations.upstream.demo.server``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from generations.upstream.demo.server import DemoUpstream


class Command(BaseCommand):
    help = (
        "Serve the demo upstream, an Ark-compatible image generation API with signed, "
        "expiring image URLs, on DEMO_UPSTREAM_URL until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        default = urlsplit(settings.DEMO_UPSTREAM_URL)
        parser.add_argument(
            "--host",
            default=default.hostname or "127.0.0.1",
            help="Address to listen on (default: the host of DEMO_UPSTREAM_URL).",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=default.port or 80,
            help="Port to listen on; 0 picks a free one (default: the port of DEMO_UPSTREAM_URL).",
        )
        parser.add_argument(
            "--url-ttl",
            type=int,
            default=settings.DEMO_UPSTREAM_URL_TTL,
            help="Seconds an image URL stays valid (default: DEMO_UPSTREAM_URL_TTL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["url_ttl"] < 1:
            raise CommandError("--url-ttl must be at least 1 second.")
        if not 0 <= options["port"] <= 65535:
            raise CommandError("--port must be between 0 and 65535.")
        try:
            upstream = DemoUpstream(
                host=options["host"], port=options["port"], url_ttl=options["url_ttl"]
            )
        except OSError as exc:
            raise CommandError(
                f"Cannot listen on {options['host']}:{options['port']}: {exc.strerror or exc}"
            ) from exc
        self.stdout.write(
            self.style.SUCCESS(f"Demo upstream serving on {upstream.base_url}")
            + f" (API {upstream.api_base_url}, image URLs valid {options['url_ttl']}s)"
        )
        if options["verbosity"] > 1:
            self.stdout.write(f"Listening on: {', '.join(upstream.listening_on)}")
        self.stdout.flush()
        try:
            upstream.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")
