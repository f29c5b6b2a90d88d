"""The gallery opened again in Chromium: how many image requests reach the server, run
as a child of run.py.

48 stored results with their thumbnails (two gallery pages of 24), gunicorn as in the
Procfile with its access log on, and headless Chromium (Playwright) logged in as
staff: open both pages and wait until every thumbnail is shown, then open them again
(a new navigation, as a person coming back does) and count the requests for
`/api/images/` that gunicorn logged each time.

Usage: python -m bench.browser --results 48
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPO, django_setup, free_port, report, stop_process, wait_for_port

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench-browser-pass"  # a throwaway user of a throwaway database


def stored_results(count: int) -> list[int]:
    """`count` results stored with their thumbnails, as the two stages leave them."""
    from django.utils import timezone
    from PIL import Image

    from generations.models import Generation, GenerationResult
    from storage_backends import images as image_storage

    backend = image_storage.active_backend()
    ids = []
    for number in range(count):
        colour = (number * 5 % 256, 90, 255 - number * 5 % 256)
        jpeg, webp = io.BytesIO(), io.BytesIO()
        Image.new("RGB", (1024, 1024), colour).save(jpeg, format="JPEG", quality=90)
        Image.new("RGB", (512, 512), colour).save(webp, format="WEBP", quality=80)
        generation = Generation.objects.create(prompt_text=f"a harbour in colour {number}")
        url = f"https://ark-demo.example/images/{number}.jpeg"
        result = GenerationResult.objects.create(
            generation=generation,
            upstream_model_id="bench",
            status=GenerationResult.Status.SUCCESS,
            external_url=url,
            image_url=url,
            params_used={},
            created_at=timezone.now(),
        )
        key = image_storage.image_key(result_id=result.pk, extension="jpg")
        thumbnail = image_storage.thumbnail_key(result_id=result.pk)
        image_storage.save_object_bytes(backend=backend, key=key, data=jpeg.getvalue())
        image_storage.save_object_bytes(backend=backend, key=thumbnail, data=webp.getvalue())
        GenerationResult.objects.filter(pk=result.pk).update(
            storage_status=GenerationResult.StorageStatus.STORED,
            storage_backend=backend,
            storage_key=key,
            thumbnail_key=thumbnail,
            content_type="image/jpeg",
            byte_size=len(jpeg.getvalue()),
            sha256=hashlib.sha256(jpeg.getvalue()).hexdigest(),
            width=1024,
            height=1024,
            stored_at=timezone.now(),
            image_url=result.stable_url,
        )
        ids.append(result.pk)
    return ids


def image_requests(log: Path) -> int:
    time.sleep(1)  # gunicorn logs a request after answering it
    return sum(1 for line in log.read_text().splitlines() if '"GET /api/images/' in line)


def open_gallery(page: Any, base: str, urls: list[str]) -> int:
    """Open each URL and wait until every <img> on it is shown; the images shown."""
    shown = 0
    for url in urls:
        page.goto(f"{base}{url}")
        page.wait_for_function(
            "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
        )
        shown += page.evaluate("document.images.length")
    return shown


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=int, default=48)
    args = parser.parse_args()
    django_setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from playwright.sync_api import sync_playwright

    from gallery.views import RESULTS_PER_PAGE

    ids = stored_results(args.results)
    User.objects.create_user(username="bench-browser", password=PASSWORD, is_staff=True)
    newest_first = sorted(ids, reverse=True)
    pages = ["/gallery/"] + [
        f"/gallery/?before={newest_first[i - 1]}"
        for i in range(RESULTS_PER_PAGE, len(ids), RESULTS_PER_PAGE)
    ]

    port = free_port()
    log = Path(settings.VAR_DIR) / "gunicorn-access.log"
    output = (Path(settings.VAR_DIR) / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "8",
            "--access-logfile",
            str(log),
        ],
        cwd=REPO,
        env=os.environ,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            # Tall enough that no thumbnail waits for a scroll (they load lazily).
            context = browser.new_context(viewport={"width": 1280, "height": 8000})
            page = context.new_page()
            # Logging in lands on the gallery: its first page is fetched from there.
            before = image_requests(log)
            page.goto(f"{base}/accounts/login/?next=/gallery/")
            page.get_by_label("Username").fill("bench-browser")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/gallery/")
            shown_first = open_gallery(page, base, pages)
            first = image_requests(log) - before
            shown_again = open_gallery(page, base, pages)
            again = image_requests(log) - before - first
            browser.close()
    finally:
        stop_process(server)
        output.close()
    report(
        {
            "results": len(ids),
            "pages": len(pages),
            "shown_first": shown_first,
            "shown_again": shown_again,
            "first_visit_requests": first,
            "second_visit_requests": again,
        }
    )


if __name__ == "__main__":
    main()
