"""`make bench`: how fast genvault is, each figure against a baseline measured beside it.

The machines that run this are shared and noisy, so nothing here is an absolute
number: every figure is a ratio against a baseline measured in the same run,
repetition by repetition, and the medians are compared with the performance goals. Each
measurement runs in child processes on a throwaway SQLite database and storage folder
(PostgreSQL for the gallery: a database of its own, dropped afterwards), with the demo
upstream in a process of its own, Redis for Celery on queues of this run, loopback only.

    make bench                       # --quick: smaller counts, about 10 minutes
    make bench ARGS=--full           # the full sizes (500 images, a million gallery rows)
    make bench ARGS="--only storing,memory"
    make bench ARGS=--profile        # also write a pyinstrument profile of storing

It prints a table and writes bench/results/latest.json and bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    POSTGRES_URL,
    REDIS_URL,
    REPO,
    BenchEnv,
    Row,
    demo_upstream,
    run_child,
    service_reachable,
    temporary_root,
)
from bench.memory import IMAGES as MEMORY_IMAGES

RESULTS = REPO / "bench" / "results"
MEASUREMENTS = (
    "storing",
    "burst",
    "thumbnails",
    "memory",
    "pixels",
    "gallery",
    "organize",
    "browser",
    "serving",
    "generate",
    "operations",
)
# The tag and favorites filters: at this many results against the small count, with
# more repetitions than the gallery's (a page is a few tens of ms on a noisy machine).
ORGANIZE_SMALL, ORGANIZE_LARGE = 1000, 1_000_000
ORGANIZE_MIN_REPS = 31
MiB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does: --quick (default) or --full."""

    label: str
    store_count: int
    store_reps: int
    memory_megabytes: float
    memory_reps: int
    gallery_small: int
    gallery_large: int
    gallery_reps: int
    serving_seconds: float
    serving_reps: int
    generate_calls: int
    operations_images: int
    operations_reps: int
    burst_count: int
    burst_backlog: int
    burst_reps: int
    thumbnail_count: int
    thumbnail_reps: int


QUICK = Sizes(
    label="quick",
    store_count=60,
    store_reps=5,
    memory_megabytes=200,
    memory_reps=3,
    gallery_small=1000,
    gallery_large=200_000,
    gallery_reps=15,
    serving_seconds=2.0,
    serving_reps=3,
    generate_calls=80,
    operations_images=200,
    operations_reps=3,
    burst_count=100,
    burst_backlog=400,
    burst_reps=5,
    thumbnail_count=60,
    thumbnail_reps=5,
)
FULL = Sizes(
    label="full",
    store_count=500,
    store_reps=5,
    memory_megabytes=200,
    memory_reps=5,
    gallery_small=1000,
    gallery_large=1_000_000,
    gallery_reps=21,
    serving_seconds=4.0,
    serving_reps=5,
    generate_calls=120,
    operations_images=2000,
    operations_reps=5,
    burst_count=500,
    burst_backlog=2000,
    burst_reps=5,
    thumbnail_count=500,
    thumbnail_reps=5,
)


def ratio(measured: float, baseline: float) -> float | None:
    if not baseline or baseline != baseline or measured != measured:
        return None
    return measured / baseline


def at_least(value: float | None, goal: float) -> bool | None:
    return None if value is None else value >= goal


def at_most(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def row_at_least(
    name: str,
    *,
    measured: str,
    baseline: str,
    ratio: float | None,
    floor: float,
    note: str,
    samples: dict[str, Any],
) -> Row:
    """A row whose goal is a ratio of at least `floor`: the goal shown and its verdict agree."""
    return Row(
        name=name,
        measured=measured,
        baseline=baseline,
        ratio=ratio,
        goal=f">= {floor:g}",
        met=at_least(ratio, floor),
        note=note,
        samples=samples,
    )


# --- the measurements --------------------------------------------------------------


def measure_storing(root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace) -> list[Row]:
    env = BenchEnv(root, "storing", demo_url=demo_url)
    env.migrate()
    skip_celery = not service_reachable("127.0.0.1", 6379)
    out = run_child(
        "storing",
        [
            "suite",
            "--count",
            str(sizes.store_count),
            "--reps",
            str(sizes.store_reps),
            "--concurrency",
            "8",
            "--log-dir",
            str(env.dir),
            *(["--skip-celery"] if skip_celery else []),
        ],
        env.env,
        timeout=900,
    )
    m = out["medians"]
    size_note = f"{out['count']} images of {out['bytes_each'] / MiB:.2f} MiB, concurrency 8"
    rows = [
        row_at_least(
            "1. storing: restore_images --sync",
            measured=f"{m['restore']:.1f} img/s",
            baseline=f"{m['raw']:.1f} img/s raw copy",
            ratio=ratio(m["restore"], m["raw"]),
            floor=0.85,
            note=size_note + "; thumbnails included",
            samples=out["restore"],
        )
    ]
    rows.append(
        Row(
            name="1c. storing: with fsync vs without",
            measured=f"{m['restore']:.1f} img/s with fsync",
            baseline=f"{m['restore_no_fsync']:.1f} img/s without",
            ratio=ratio(m["restore_no_fsync"], m["restore"]),
            goal="<= 1.15",
            met=at_most(ratio(m["restore_no_fsync"], m["restore"]), 1.15),
            note=(
                size_note + "; restore_images --sync into local storage, against the same "
                "with os.fsync patched out in the harness (file and folder), alternating"
            ),
            samples=out["restore"],
        )
    )
    if skip_celery:
        note = "no Redis at 127.0.0.1:6379"
        rows.append(Row("1b. storing: Celery worker", "n/a", "n/a", None, ">= 0.85", None, note))
        rows.append(Row("2. scale-out: 2 workers vs 1", "n/a", "n/a", None, ">= 1.6", None, note))
        return rows
    rows.append(
        row_at_least(
            "1b. storing: 1 Celery worker on Redis",
            measured=f"{m['celery_1']:.1f} img/s",
            baseline=f"{m['celery_raw']:.1f} img/s raw copy",
            ratio=ratio(m["celery_1"], m["celery_raw"]),
            floor=0.85,
            note=size_note + "; worker = 1 process, --pool threads --concurrency 8",
            samples=out["celery"],
        )
    )
    rows.append(
        row_at_least(
            "2. scale-out: 2 worker processes vs 1",
            measured=f"{m['celery_2']:.1f} img/s",
            baseline=f"{m['celery_1']:.1f} img/s",
            ratio=ratio(m["celery_2"], m["celery_1"]),
            floor=1.6,
            note=f"{os.cpu_count()} cores shared by workers, demo upstream and harness",
            samples=out["celery"],
        )
    )
    return rows


def measure_burst(root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace) -> list[Row]:
    if not service_reachable("127.0.0.1", 6379):
        return [Row("1d. burst behind derivatives", "n/a", "n/a", None, "<= 1.2", None, "no Redis")]
    env = BenchEnv(root, "burst", demo_url=demo_url)
    env.migrate()
    out = run_child(
        "storing",
        [
            "burst",
            "--count",
            str(sizes.burst_count),
            "--backlog",
            str(sizes.burst_backlog),
            "--reps",
            str(sizes.burst_reps),
            "--log-dir",
            str(env.dir),
        ],
        env.env,
        timeout=1800,
    )
    m = out["medians"]
    r = ratio(m["backlog"], m["empty"])
    return [
        Row(
            name=f"1d. {out['count']} new results stored, {out['backlog']:,} derivatives queued",
            measured=f"{m['backlog']:.2f} s behind the backlog",
            baseline=f"{m['empty']:.2f} s queue empty",
            ratio=r,
            goal="<= 1.2",
            met=at_most(r, 1.2),
            note=(
                "one worker as the Procfile starts it (prefork, concurrency 2, "
                "--queues storing,derivatives) on Redis; 2K demo JPEGs; the backlog's jobs "
                "are real decodes of stored 2K JPEGs; seconds until the burst is stored"
            ),
            samples=out["samples"],
        )
    ]


def measure_thumbnails(
    root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace
) -> list[Row]:
    env = BenchEnv(root, "thumbnails", demo_url=demo_url)
    env.migrate()
    processes = os.cpu_count() or 2
    child_args = [
        "--count",
        str(sizes.thumbnail_count),
        "--processes",
        str(processes),
        "--reps",
        str(sizes.thumbnail_reps),
    ]
    out = run_child("derivatives", child_args, env.env, timeout=1800)
    m = out["medians"]
    r = ratio(m["product"], m["bare"])
    note = (
        f"{out['count']} stored 2048x2048 demo JPEGs of {out['bytes_each'] / MiB:.2f} MiB, "
        f"{processes} processes each; result_make_derivatives (copy out and check the "
        "SHA-256, decode, thumbnail, fsync'd write, record) against open, draft, load, "
        "thumbnail, save WebP"
    )
    if args.profile or not at_least(r, 0.8):
        target = RESULTS / "thumbnails-profile.txt"
        run_child("derivatives", [*child_args, "--profile", str(target)], env.env, timeout=900)
        note += f"; profile (one process, both loops): {target.relative_to(REPO)}"
    return [
        row_at_least(
            "1e. thumbnails: derivatives stage vs bare Pillow",
            measured=f"{m['product']:.1f} img/s",
            baseline=f"{m['bare']:.1f} img/s bare Pillow",
            ratio=r,
            floor=0.8,
            note=note,
            samples=out["samples"],
        )
    ]


def measure_browser(root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace) -> list[Row]:
    if not Path("/usr/bin/chromium").exists():
        return [Row("4b. gallery opened again", "n/a", "n/a", None, "0", None, "no Chromium")]
    env = BenchEnv(root, "browser", demo_url=demo_url)
    env.migrate()
    out = run_child("browser", ["--results", "48"], env.env, timeout=600)
    again = out["second_visit_requests"]
    return [
        Row(
            name=f"4b. gallery opened again in Chromium ({out['shown_again']} thumbnails)",
            measured=f"{again} image requests reached the server",
            baseline=f"{out['first_visit_requests']} on the first visit",
            ratio=None,
            goal="0",
            met=again == 0 and out["shown_again"] == out["results"],
            note=(
                f"{out['pages']} gallery pages, headless Chromium (Playwright), gunicorn as "
                "in the Procfile; requests for /api/images/ counted in gunicorn's access log"
            ),
            samples=out,
        )
    ]


def measure_memory(root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace) -> list[Row]:
    limit = int((sizes.memory_megabytes + 64) * MiB)
    env = BenchEnv(
        root,
        "memory",
        demo_url=demo_url,
        IMAGE_FETCH_MAX_BYTES=str(limit),
        IMAGE_FETCH_MAX_PIXELS="400000000",
        IMAGE_FETCH_TIMEOUT="10,180",
    )
    env.migrate()
    runs = [
        run_child("memory", ["--megabytes", str(sizes.memory_megabytes)], env.env, timeout=600)
        for _ in range(sizes.memory_reps)
    ]
    product = sorted(r["product_mb"] for r in runs)[len(runs) // 2]
    raw = sorted(r["raw_mb"] for r in runs)[len(runs) // 2]
    first = runs[0]
    return [
        Row(
            name="3. memory: store one huge JPEG",
            measured=f"{product:.1f} MB above idle",
            baseline=f"{raw:.1f} MB raw download",
            ratio=None,
            goal="<= 64 MB",
            met=product <= 64,
            note=(
                f"{first['byte_size'] / MiB:.0f} MiB, {first['pixels']} px; "
                f"idle RSS {first['idle_mb']:.0f} MB; stored in {first['seconds']:.1f} s"
            ),
            samples={"runs": runs},
        )
    ]


def measure_pixels(root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace) -> list[Row]:
    """Small files that cost a lot to decode, under the default limits: stored or refused."""
    env = BenchEnv(root, "pixels", demo_url=demo_url)
    env.migrate()
    images = env.dir / "images"
    run_child("memory", ["--make-images", str(images)], env.env, timeout=300)
    rows: list[Row] = []
    for number, label, name in (
        ("3b", "10000x10000 PNG", "png-10000"),
        ("3c", "4096x4096 progressive JPEG", "jpeg-progressive-4096"),
    ):
        path = images / MEMORY_IMAGES[name]
        runs = [
            run_child("memory", ["--image", str(path)], env.env, timeout=300)
            for _ in range(sizes.memory_reps)
        ]
        product = sorted(r["product_mb"] for r in runs)[len(runs) // 2]
        raw = sorted(r["raw_mb"] for r in runs)[len(runs) // 2]
        first = runs[0]
        code = first["error"].split(":", 1)[0]
        # Refused by an image check (too many pixels, too large), not by a failed download.
        refused = code.startswith("image_") and all(r["outcome"] == "failed" for r in runs)
        rows.append(
            Row(
                name=f"{number}. worker memory per image: {label}",
                measured=f"{product:.1f} MB above idle"
                + (f", refused ({code})" if refused else ""),
                baseline=f"{raw:.1f} MB raw download",
                ratio=None,
                goal="< 100 MB above idle, or refused",
                met=refused or product < 100,
                note=(
                    f"{first['byte_size'] / 1024:.0f} KB file; "
                    + ("refused: " + first["error"] if refused else first["outcome"])
                    + f"; IMAGE_FETCH_MAX_PIXELS={first['max_pixels']}; "
                    f"idle RSS {first['idle_mb']:.0f} MB"
                ),
                samples={"runs": runs},
            )
        )
    return rows


def measure_gallery(root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace) -> list[Row]:
    if not service_reachable("127.0.0.1", 5432):
        return [Row("4. gallery", "n/a", "n/a", None, "<= 1.3", None, "no PostgreSQL")]
    import psycopg

    name = f"genvault_bench_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        env = BenchEnv(root, "gallery", demo_url=demo_url, DATABASE_URL=f"{POSTGRES_URL}/{name}")
        env.migrate()
        out = run_child(
            "gallery",
            [
                "--small",
                str(sizes.gallery_small),
                "--large",
                str(sizes.gallery_large),
                "--reps",
                str(sizes.gallery_reps),
            ],
            env.env,
            timeout=900,
        )
    finally:
        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if not out.get("available"):
        return [Row("4. gallery", "n/a", "n/a", None, "<= 1.3", None, "/gallery/ not available")]
    rows = []
    for key, label in (
        ("page_1", "page 1"),
        ("deep_page", "last page"),
        ("search", f"search ?q={out.get('search', '')}"),
    ):
        small, large = out["small"][key], out["large"][key]
        r = ratio(large["median"], small["median"])
        same_queries = small["queries"] == large["queries"]
        rows.append(
            Row(
                name=f"4. gallery {label}, PostgreSQL"
                + ("" if out["large_count"] >= 1_000_000 else " (--quick: fewer rows)"),
                measured=f"{large['median'] * 1000:.1f} ms at {out['large_count']:,}",
                baseline=f"{small['median'] * 1000:.1f} ms at {out['small_count']:,}",
                ratio=r,
                goal="<= 1.3, same queries",
                met=None if r is None else (r <= 1.3 and same_queries),
                note=(
                    f"queries {small['queries']} vs {large['queries']}; "
                    f"page {out['small']['last_page']} vs {out['large']['last_page']}"
                    if key == "deep_page"
                    else f"queries {small['queries']} vs {large['queries']}"
                ),
                samples={"small": small, "large": large, "slowest": out.get("slowest", {})},
            )
        )
    return rows


def measure_organize(
    root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace
) -> list[Row]:
    """The tag and favorites filters' pages at a million results against a thousand."""
    names = [
        ("tag", "8. tag filter"),
        ("favorite", "8b. favorites filter"),
    ]
    if not service_reachable("127.0.0.1", 5432):
        return [
            Row(label, "n/a", "n/a", None, "<= 1.3", None, "no PostgreSQL") for _, label in names
        ]
    import psycopg

    name = f"genvault_bench_organize_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        env = BenchEnv(root, "organize", demo_url=demo_url, DATABASE_URL=f"{POSTGRES_URL}/{name}")
        env.migrate()
        out = run_child(
            "organize",
            [
                "--small",
                str(ORGANIZE_SMALL),
                "--large",
                str(ORGANIZE_LARGE),
                "--reps",
                str(max(sizes.gallery_reps, ORGANIZE_MIN_REPS)),
            ],
            env.env,
            timeout=1800,
        )
    finally:
        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    rows = []
    for kind, label in names:
        for page, words in (("page_1", "page 1"), ("deep_page", "oldest page")):
            small, large = out["small"][f"{kind}_{page}"], out["large"][f"{kind}_{page}"]
            r = ratio(large["median"], small["median"])
            same_queries = small["queries"] == large["queries"]
            rows.append(
                Row(
                    name=f"{label} {words}, PostgreSQL",
                    measured=f"{large['median'] * 1000:.1f} ms at {out['large_count']:,}",
                    baseline=f"{small['median'] * 1000:.1f} ms at {out['small_count']:,}",
                    ratio=r,
                    goal="<= 1.3, same queries",
                    met=None if r is None else (r <= 1.3 and same_queries),
                    note=f"queries {small['queries']} vs {large['queries']}",
                    samples={"small": small, "large": large},
                )
            )
    return rows


def measure_serving(root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace) -> list[Row]:
    static_dir = root / "serving" / "static"
    env = BenchEnv(root, "serving", demo_url=demo_url, GENVAULT_BENCH_STATIC_DIR=str(static_dir))
    env.migrate()
    out = run_child(
        "serving",
        ["--seconds", str(sizes.serving_seconds), "--reps", str(sizes.serving_reps)],
        env.env,
        timeout=600,
    )
    m = out["medians"]
    note = f"{out['bytes'] / MiB:.2f} MiB; gunicorn 2 workers x 8 threads; {out['clients']} clients"
    return [
        row_at_least(
            "5. serving: /api/images/ID vs whitenoise",
            measured=f"{m['api_200']:.0f} req/s",
            baseline=f"{m['static_200']:.0f} req/s whitenoise",
            ratio=ratio(m["api_200"], m["static_200"]),
            floor=0.9,
            note=note,
            samples=out["samples"],
        ),
        row_at_least(
            "5b. serving: 304 vs 200",
            measured=f"{m['api_304']:.0f} req/s (304)",
            baseline=f"{m['api_200']:.0f} req/s (200)",
            ratio=ratio(m["api_304"], m["api_200"]),
            floor=5,
            note="If-None-Match with the ETag, same route and token",
            samples=out["samples"],
        ),
    ]


def measure_generate(
    root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace
) -> list[Row]:
    if not service_reachable("127.0.0.1", 6379):
        return [Row("6. generate overhead", "n/a", "n/a", None, "<= 1.05", None, "no Redis")]
    env = BenchEnv(root, "generate", demo_url=demo_url)
    env.migrate()
    out = run_child(
        "generate", ["--calls", str(sizes.generate_calls), "--size", "2K"], env.env, timeout=600
    )
    m = out["medians"]
    # Each pair of calls asks for the same image (same prompt, back to back, order
    # alternating), so the median of the pairs' ratios cancels the upstream's own
    # variation, which is larger than the effect measured.
    pairs = [
        e / d for e, d in zip(out["samples"]["enabled"], out["samples"]["disabled"], strict=True)
    ]
    r = statistics.median(pairs)
    return [
        Row(
            name="6. /api/generate: storing queued vs not",
            measured=f"{m['enabled'] * 1000:.1f} ms",
            baseline=f"{m['disabled'] * 1000:.1f} ms",
            ratio=r,
            goal="<= 1.05",
            met=at_most(r, 1.05),
            note=(
                f"{out['calls']} pairs, median of paired ratios; 2K demo images; baseline = "
                "on_commit enqueue patched out in the harness; queue not consumed"
            ),
            samples=out["samples"],
        )
    ]


OPERATIONS_CONCURRENCY = 4  # the commands' default, and rclone's default --transfers


def _operation_row(
    name: str,
    *,
    mode: str,
    child_args: list[str],
    env: dict[str, str],
    floor: float,
    baseline_label: str,
    note: str,
    args: argparse.Namespace,
) -> Row:
    """Run one operation against its baseline; where the goal is missed (or with
    --profile), profile the command once more and say where its time went."""
    out = run_child("operations", [mode, *child_args], env, timeout=1800)
    m = out["medians"]
    r = ratio(m["product"], m["baseline"])
    samples: dict[str, Any] = {"samples": out["samples"]}
    if args.profile or not at_least(r, floor):
        target = RESULTS / f"operations-{mode}-profile.txt"
        profiled = run_child(
            "operations", [mode, *child_args, "--profile", str(target)], env, timeout=1800
        )
        where = ", ".join(f"{label} {share:.0%}" for label, share in profiled["where"])
        note += f"; profile, one image at a time ({target.name}): {where}"
        samples["profile"] = profiled
    return row_at_least(
        name,
        measured=f"{m['product']:.1f} img/s",
        baseline=f"{m['baseline']:.1f} img/s {baseline_label}",
        ratio=r,
        floor=floor,
        note=note,
        samples=samples,
    )


def measure_operations(
    root: Path, demo_url: str, sizes: Sizes, args: argparse.Namespace
) -> list[Row]:
    """The operator's commands over stored images, each against the raw tool for its job."""
    c = str(OPERATIONS_CONCURRENCY)
    reps = ["--reps", str(sizes.operations_reps)]
    env = BenchEnv(root, "operations", demo_url=demo_url)
    env.migrate()
    made = run_child(
        "operations", ["prepare", "--count", str(sizes.operations_images)], env.env, timeout=900
    )
    what = (
        f"{made['count']:,} stored 2048x2048 JPEGs of {made['bytes_each'] / MiB:.2f} MiB "
        f"and their {made['thumbnail_bytes'] / 1024:.0f} KB thumbnails"
    )
    rows = [
        _operation_row(
            "7. verify_images vs sha256sum -c",
            mode="verify",
            child_args=[*reps, "--concurrency", c],
            env=env.env,
            floor=0.8,
            baseline_label="sha256sum",
            note=(
                f"{what}; verify_images --concurrency {c} against `xargs -P {c} sha256sum -c` "
                f"over {c} checksum lists of the same files (page cache warm for both)"
            ),
            args=args,
        )
    ]
    missing = [tool for tool in ("zip", "unzip") if shutil.which(tool) is None]
    bundle = env.dir / "bundle.zip"
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install zip unzip)"
        rows.append(Row("7b. export_backup --images", "n/a", "n/a", None, ">= 0.8", None, reason))
        rows.append(Row("7c. import_backup", "n/a", "n/a", None, ">= 0.7", None, reason))
    else:
        rows.append(
            _operation_row(
                "7b. export_backup --images vs zip -0 -r",
                mode="export",
                child_args=[*reps, "--bundle", str(bundle)],
                env=env.env,
                floor=0.8,
                baseline_label="zip -0",
                note=f"{what}; one file each, written to the same disk",
                args=args,
            )
        )
        fresh = BenchEnv(root, "operations-import", demo_url=demo_url)
        fresh.migrate()
        empty_db = fresh.var / "empty.sqlite3"
        shutil.copyfile(fresh.var / "db.sqlite3", empty_db)
        rows.append(
            _operation_row(
                "7c. import_backup vs unzip",
                mode="import",
                child_args=[*reps, "--bundle", str(bundle), "--empty-db", str(empty_db)],
                env=fresh.env,
                floor=0.7,
                baseline_label="unzip",
                note=(
                    "the bundle of 7b into a freshly migrated database and an empty storage "
                    "folder each repetition; unzip into an empty folder"
                ),
                args=args,
            )
        )
    if shutil.which("rclone") is None:
        rows.append(
            Row(
                "7d. migrate_storage --to s3",
                "n/a",
                "n/a",
                None,
                ">= 0.8",
                None,
                "rclone not installed (apt-get install rclone)",
            )
        )
    else:
        rows.append(
            _operation_row(
                "7d. migrate_storage --to s3 vs rclone copy",
                mode="migrate",
                child_args=[*reps, "--concurrency", c],
                env=env.env,
                floor=0.8,
                baseline_label="rclone",
                note=(
                    f"{what}, to moto's S3 server (its own process, loopback); "
                    f"--keep-source --concurrency {c} against rclone copy --transfers {c} "
                    "(rclone's defaults otherwise), each into an emptied bucket"
                ),
                args=args,
            )
        )
    return rows


def profile_storing(root: Path, demo_url: str) -> Path:
    env = BenchEnv(root, "profile", demo_url=demo_url)
    env.migrate()
    target = RESULTS / "storing-profile.txt"
    run_child("storing", ["profile", "--count", "30", "--out", str(target)], env.env, timeout=600)
    return target


RUNNERS: dict[str, Callable[[Path, str, Sizes, argparse.Namespace], list[Row]]] = {
    "storing": measure_storing,
    "burst": measure_burst,
    "thumbnails": measure_thumbnails,
    "memory": measure_memory,
    "pixels": measure_pixels,
    "gallery": measure_gallery,
    "organize": measure_organize,
    "browser": measure_browser,
    "serving": measure_serving,
    "generate": measure_generate,
    "operations": measure_operations,
}


# --- output ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = 0.0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(ram_gib, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _fmt_ratio(row: Row) -> str:
    return "-" if row.ratio is None else f"{row.ratio:.2f}"


def _fmt_met(row: Row) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[row.met]


def table_lines(rows: list[Row]) -> list[str]:
    header = ["name", "measured", "baseline", "ratio", "goal", "met?"]
    cells = [[r.name, r.measured, r.baseline, _fmt_ratio(r), r.goal, _fmt_met(r)] for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for c in cells:
        out.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    return out


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [
        f"Run {meta['finished_at']} ({meta['sizes']} sizes, {meta['seconds']:.0f} s) on "
        f"{m['nproc']} x {m['cpu']}, {m['ram_gib']} GiB RAM, Python {m['python']}.",
        "",
        "| name | measured | baseline | ratio | goal | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.measured} | {r.baseline} | {_fmt_ratio(r)} | "
            f"{r.goal.replace('<', '&lt;').replace('>', '&gt;')} | {_fmt_met(r)} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller counts (the default)")
    size.add_argument("--full", action="store_true", help="the full sizes (500 images)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {MEASUREMENTS}")
    parser.add_argument("--profile", action="store_true", help="also profile the storing path")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    sizes = FULL if args.full else QUICK
    chosen = [m for m in args.only.split(",") if m] or list(MEASUREMENTS)
    unknown = set(chosen) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    root = temporary_root()
    started = time.monotonic()
    print(
        f"genvault bench ({sizes.label} sizes{'' if args.full else '; --full for the full sizes'})"
        f": {', '.join(chosen)}; Redis {REDIS_URL}; scratch {root}",
        flush=True,
    )
    rows: list[Row] = []
    failures: dict[str, str] = {}
    try:
        with demo_upstream(root) as demo_url:
            for name in chosen:
                t0 = time.monotonic()
                print(f"  {name} ...", end="", flush=True)
                try:
                    new_rows = RUNNERS[name](root, demo_url, sizes, args)
                except Exception as exc:
                    failures[name] = "".join(traceback.format_exception(exc))[-3000:]
                    new_rows = [Row(name, "error", "-", None, "-", None, str(exc)[:200])]
                    print(f" FAILED ({time.monotonic() - t0:.0f} s)", flush=True)
                else:
                    print(f" {time.monotonic() - t0:.0f} s", flush=True)
                rows.extend(new_rows)
            if args.profile:
                print(f"  storing profile: {profile_storing(root, demo_url)}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    meta = {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.monotonic() - started,
        "sizes": sizes.label,
        "size_settings": sizes.__dict__,
        "machine": machine(),
    }
    print()
    print("\n".join(table_lines(rows)))
    for row in rows:
        if row.note:
            print(f"  {row.name}: {row.note}")
    for name, text in failures.items():
        print(f"\n{name} failed:\n{text}", file=sys.stderr)
    (RESULTS / "latest.json").write_text(
        json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2) + "\n"
    )
    (RESULTS / "latest.md").write_text(markdown(rows, meta))
    written = f"{RESULTS / 'latest.json'} and {RESULTS / 'latest.md'}"
    print(f"\nwrote {written} ({meta['seconds']:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
