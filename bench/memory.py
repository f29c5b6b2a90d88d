"""Peak memory of storing one huge JPEG, run as a child of run.py.

One process per repetition, like a worker with `--pool solo`: Django set up, one small
image stored first (so every import and Pillow plugin is loaded: that is "idle"),
then the kernel's high-water mark is reset (writing 5 to /proc/self/clear_refs) and
the big image is stored by `result_store_image`. Peak minus idle is the figure. The
baseline, in the same process and measured the same way, is a plain streamed download
of the same URL to a file with requests.

Usage: python -m bench.memory --megabytes 200 (with IMAGE_FETCH_MAX_BYTES and
IMAGE_FETCH_MAX_PIXELS raised in the environment by the harness)
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import django_setup, report

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


def measure(megabytes: float) -> dict[str, Any]:
    from bench.storing import prepare_results
    from generations.models import GenerationResult
    from generations.services.storing import StoreOutcome, result_store_image

    small_id, big_id = (
        prepare_results(count=1, megabytes=0.5)[0],
        prepare_results(count=1, megabytes=megabytes, kind="big")[0],
    )
    outcome = result_store_image(result_id=small_id)  # warm: imports, plugins, connections
    assert outcome is StoreOutcome.STORED, outcome
    big = GenerationResult.objects.get(pk=big_id)
    _raw_download(big.external_url)  # warm requests' own imports

    idle = _reset_peak()
    _raw_download(big.external_url)
    raw_mb = _peak_above(idle)

    idle = _reset_peak()
    started = time.perf_counter()
    outcome = result_store_image(result_id=big_id)
    seconds = time.perf_counter() - started
    product_mb = _peak_above(idle)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=200)
    args = parser.parse_args()
    django_setup()
    report(measure(args.megabytes))


if __name__ == "__main__":
    main()
