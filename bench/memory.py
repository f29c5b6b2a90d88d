"""Peak memory of storing one image, run as a child of run.py.

One process per repetition, like a worker with `--pool solo`: Django set up, one small
image stored first (so every import and Pillow plugin is loaded: that is "idle"),
then the kernel's high-water mark is reset (writing 5 to /proc/self/clear_refs) and
the image is stored by `result_store_image`. Peak minus idle is the figure. The
baseline, in the same process and measured the same way, is a plain streamed download
of the same URL to a file with requests.

Two kinds of image: a huge JPEG from the demo upstream (with IMAGE_FETCH_MAX_BYTES and
IMAGE_FETCH_MAX_PIXELS raised in the environment by the harness), and the files of
`--make-images`, small files that cost a lot to decode, served by `python -m
http.server` in a process of its own (under the default limits).

Usage: python -m bench.memory --megabytes 200
       python -m bench.memory --make-images DIR
       python -m bench.memory --image DIR/NAME
"""

from __future__ import annotations

import argparse
import gc
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from bench.common import PYTHON, django_setup, free_port, report, stop_process, wait_for_port

MiB = 1024 * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> int:
    """Reset VmHWM to the current RSS; return that RSS in KiB."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def _peak_above(idle_kib: int) -> float:
    return (_status_kib("VmHWM") - idle_kib) / 1024


def _raw_download(url: str) -> None:
    import requests

    with (
        requests.get(url, stream=True, timeout=(10, 120)) as response,
        tempfile.TemporaryFile() as fh,
    ):
        response.raise_for_status()
        for chunk in response.iter_content(64 * 1024):
            fh.write(chunk)


def _measured_store(
    *, warm_id: int, image_id: int, url: str
) -> tuple[Any, int, float, float, float]:
    """Store `image_id` after a warm-up store of `warm_id`; the peak memory above idle of
    a raw download of `url` and of the store: (outcome, idle KiB, raw MB, store MB, s)."""
    from generations.services.storing import StoreOutcome, result_store_image

    outcome = result_store_image(result_id=warm_id)  # warm: imports, plugins, connections
    assert outcome is StoreOutcome.STORED, outcome
    _raw_download(url)  # warm requests' own imports

    idle = _reset_peak()
    _raw_download(url)
    raw_mb = _peak_above(idle)

    idle = _reset_peak()
    started = time.perf_counter()
    outcome = result_store_image(result_id=image_id)
    seconds = time.perf_counter() - started
    return outcome, idle, raw_mb, _peak_above(idle), seconds


def measure(megabytes: float) -> dict[str, Any]:
    from bench.storing import prepare_results
    from generations.models import GenerationResult
    from generations.services.storing import StoreOutcome

    small_id, big_id = (
        prepare_results(count=1, megabytes=0.5)[0],
        prepare_results(count=1, megabytes=megabytes, kind="big")[0],
    )
    big = GenerationResult.objects.get(pk=big_id)
    outcome, idle, raw_mb, product_mb, seconds = _measured_store(
        warm_id=small_id, image_id=big_id, url=big.external_url
    )
    if outcome is not StoreOutcome.STORED:
        big.refresh_from_db()
        raise RuntimeError(f"the big image was not stored: {outcome} {big.storage_error}")
    big.refresh_from_db()
    return {
        "idle_mb": idle / 1024,
        "product_mb": product_mb,
        "raw_mb": raw_mb,
        "seconds": seconds,
        "byte_size": big.byte_size,
        "pixels": f"{big.width}x{big.height}",
    }


# --- small files that cost a lot to decode -----------------------------------------

WARM_IMAGE = "warm.png"
IMAGES = {
    "png-10000": "10000x10000.png",
    "jpeg-progressive-4096": "4096x4096-progressive.jpg",
}


def _solid_png(width: int, height: int) -> bytes:
    """A PNG of one colour, compressed row by row: 100 megapixels in a few hundred KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\xc8\x1e\x1e" * width
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def make_images(folder: Path) -> dict[str, Any]:
    """Write the images, in a process apart from the ones measured."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / WARM_IMAGE).write_bytes(_solid_png(640, 480))
    (folder / IMAGES["png-10000"]).write_bytes(_solid_png(10000, 10000))
    noise = Image.effect_noise((4096, 4096), 48).convert("L")
    photo = Image.merge("RGB", (noise, noise.transpose(Image.Transpose.ROTATE_90), noise))
    photo.save(folder / IMAGES["jpeg-progressive-4096"], quality=90, progressive=True)
    return {name: (folder / file).stat().st_size for name, file in IMAGES.items()}


def measure_image(path: Path) -> dict[str, Any]:
    from django.conf import settings

    from bench.storing import pending_results
    from generations.models import GenerationResult
    from generations.services.storing import StoreOutcome

    port = free_port()
    serve = ["-m", "http.server", "--bind", "127.0.0.1", "--directory", str(path.parent)]
    server = subprocess.Popen(
        [PYTHON, *serve, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        host = f"127.0.0.1:{port}"
        settings.IMAGE_FETCH_ALLOWED_HOSTS = [*settings.IMAGE_FETCH_ALLOWED_HOSTS, host]
        url = f"http://{host}/{path.name}"
        warm_id, image_id = pending_results(
            [f"http://{host}/{WARM_IMAGE}", url], prompt="bench: image memory"
        )
        outcome, idle, raw_mb, product_mb, seconds = _measured_store(
            warm_id=warm_id, image_id=image_id, url=url
        )
    finally:
        stop_process(server)
    result = GenerationResult.objects.get(pk=image_id)
    if outcome not in (StoreOutcome.STORED, StoreOutcome.FAILED):
        raise RuntimeError(f"{path.name}: {outcome} {result.storage_error}")
    return {
        "idle_mb": idle / 1024,
        "product_mb": product_mb,
        "raw_mb": raw_mb,
        "seconds": seconds,
        "outcome": outcome.value,
        "error": result.storage_error,
        "byte_size": path.stat().st_size,
        "max_pixels": settings.IMAGE_FETCH_MAX_PIXELS,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=200)
    parser.add_argument("--make-images", type=Path, help="write the small costly images here")
    parser.add_argument("--image", type=Path, help="store this file, served over loopback")
    args = parser.parse_args()
    if args.make_images:
        report(make_images(args.make_images))
        return
    django_setup()
    report(measure_image(args.image) if args.image else measure(args.megabytes))


if __name__ == "__main__":
    main()
