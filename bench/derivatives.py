"""Thumbnails per second: the derivatives stage against a bare Pillow loop, run as a
child of run.py.

N demo photos (2048x2048 JPEGs of about 1.5 MiB) are stored first, as the safe stage
leaves them: stored, without a thumbnail. Then, repetition by repetition in
alternating order, P processes (forked from this one, each with a share of the work):

- product: `result_make_derivatives` for each of its results (copy the stored object
  out and check its SHA-256, decode it whole, write the thumbnail, record it);
- bare: for each of the same files, what a Pillow user writes for a thumbnail: open,
  `draft` for a JPEG, `load`, shrink to 512 px, save as WebP (quality 80, method 0, the
  product's settings) to a file in the same folder.

Usage: python -m bench.derivatives --count N --processes P --reps R
       python -m bench.derivatives --count N --profile FILE
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import django_setup, median, report

THUMBNAIL_SIDE = 512


def _product(ids: list[int]) -> int:
    from generations.services.derivatives import DerivativesOutcome, result_make_derivatives

    made = 0
    for result_id in ids:
        made += result_make_derivatives(result_id=result_id) is DerivativesOutcome.MADE
    return made


def _bare(paths: list[str]) -> int:
    from PIL import Image

    for name in paths:
        path = Path(name)
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            image.load()
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            out = io.BytesIO()
            image.save(out, format="WEBP", quality=80, method=0)
        (path.parent / f"bare-{path.stem}.webp").write_bytes(out.getvalue())
    return len(paths)


def _shares(items: list[Any], processes: int) -> list[list[Any]]:
    return [items[i::processes] for i in range(processes)]


def _timed(function: Any, items: list[Any], processes: int) -> float:
    """Seconds for `processes` forked processes to do `function` over their shares."""
    from django.db import connections

    connections.close_all()  # each forked process opens its own
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool:
        started = time.perf_counter()
        done = sum(pool.map(function, _shares(items, processes)))
        elapsed = time.perf_counter() - started
    if done != len(items):
        raise RuntimeError(f"{function.__name__} did {done} of {len(items)}")
    return elapsed


def _reset_thumbnails(bare_dir: Path) -> None:
    from django.conf import settings

    from generations.models import GenerationResult

    GenerationResult.objects.update(thumbnail_key="")
    shutil.rmtree(Path(settings.MEDIA_ROOT) / "thumbnails", ignore_errors=True)
    for path in bare_dir.glob("bare-*.webp"):
        path.unlink()


def _profile(ids: list[int], paths: list[str], bare_dir: Path, out: Path) -> dict[str, Any]:
    """Both loops in this process, one after the other, under pyinstrument."""
    from pyinstrument import Profiler

    _reset_thumbnails(bare_dir)
    _product(ids[:1])  # imports and connections outside the profile
    profiler = Profiler(interval=0.0005)
    with profiler:
        _product(ids[1:])
        _bare(paths[1:])
    out.write_text(profiler.output_text(unicode=False, color=False))
    return {"profile": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", default="", help="write a profile here instead")
    args = parser.parse_args()
    django_setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench.storing import prepare_results
    from generations.models import GenerationResult

    ids = prepare_results(count=args.count, megabytes=1.5)
    call_command("restore_images", sync=True, concurrency=4, verbosity=0)
    media = Path(settings.MEDIA_ROOT)
    paths = [
        str(media / key)
        for key in GenerationResult.objects.filter(pk__in=ids)
        .order_by("pk")
        .values_list("storage_key", flat=True)
    ]
    bare_dir = media / "generations"
    if args.profile:
        report(_profile(ids, paths, bare_dir, Path(args.profile)))
        return
    samples: dict[str, list[float]] = {"product": [], "bare": []}
    for rep in range(args.reps + 1):  # the first, untimed, warms the page cache
        for mode in ("product", "bare") if rep % 2 == 0 else ("bare", "product"):
            _reset_thumbnails(bare_dir)
            if mode == "product":
                seconds = _timed(_product, ids, args.processes)
            else:
                seconds = _timed(_bare, paths, args.processes)
            if rep:
                samples[mode].append(len(ids) / seconds)
    report(
        {
            "count": len(ids),
            "processes": args.processes,
            "bytes_each": Path(paths[0]).stat().st_size,
            "samples": samples,
            "medians": {name: median(values) for name, values in samples.items()},
        }
    )


if __name__ == "__main__":
    main()
