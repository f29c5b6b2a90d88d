"""Storing throughput and scale-out, run as a child of run.py.

The images are rendered by the demo upstream before any clock starts, and every result
row is made directly from its answer, so that the figures are about storing, not
generating. Each repetition first resets the rows to `pending` and empties the storage
folder, then times one of:

- raw: plain `requests` in a thread pool downloading the same URLs straight to files
  (the baseline: what a copy costs with no checks, no thumbnail and no database);
- restore: `manage.py restore_images --sync --concurrency C` (through call_command, so
  only the storing is timed, not Python's start-up);
- restore without fsync: the same, with `os.fsync` patched out in this process (the
  baseline of what durable writes cost; the product has no switch for it);
- celery-1 / celery-2: the same ids queued on Redis to one worker process, and to two
  (each `--pool threads --concurrency C`: one OS process with C storing threads).

`burst` times a burst of new results stored by one worker as the Procfile starts it
(both queues, storing first) while a backlog of derivative jobs waits on the
derivatives queue, against the same burst with that queue empty. The backlog's
results are stored already, each its own hard link to one stored JPEG, so every job
is the real decode and thumbnail.

Usage: python -m bench.storing suite --count N --megabytes MB --concurrency C --reps R
       python -m bench.storing burst --count N --backlog M --reps R
       python -m bench.storing profile --count N --megabytes MB --out FILE
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPO, django_setup, median, report, stop_process

MAX_IMAGES_PER_CALL = 15  # Ark's (and the demo's) limit for sequential generation


def prepare_results(*, count: int, megabytes: float, kind: str = "photo") -> list[int]:
    """Ask the demo upstream for `count` images and record them as pending results.

    `photo` images are 2048x2048 JPEGs like Seedream's 2K output; `big` ones are
    dense noise, for sizes far past what a photo of that resolution reaches.
    """
    import requests
    from django.conf import settings

    urls: list[str] = []
    session = requests.Session()
    call = 0
    while len(urls) < count:
        call += 1
        wanted = min(MAX_IMAGES_PER_CALL, count - len(urls))
        response = session.post(
            f"{settings.DEMO_UPSTREAM_URL}/api/v3/images/generations",
            json={
                "model": "demo-bench",
                "prompt": f"[demo:{kind}={megabytes}] bench image batch {call}",
                "response_format": "url",
                "sequential_image_generation": "auto",
                "sequential_image_generation_options": {"max_images": wanted},
            },
            headers={"Authorization": "Bearer demo"},
            timeout=120,
        )
        response.raise_for_status()
        urls.extend(item["url"] for item in response.json()["data"] if "url" in item)
    return pending_results(urls[:count], prompt="bench")


def pending_results(urls: list[str], *, prompt: str) -> list[int]:
    """Record `urls` as one generation's pending results, as the generate service would."""
    from django.utils import timezone

    from generations.models import Generation, GenerationResult
    from generations.upstream.ark import external_url_expiry

    now = timezone.now()
    generation = Generation.objects.create(prompt_text=prompt, created_at=now)
    rows = [
        GenerationResult(
            generation=generation,
            upstream_model_id="bench",
            image_index=index,
            status=GenerationResult.Status.SUCCESS,
            storage_status=GenerationResult.StorageStatus.PENDING,
            external_url=url,
            image_url=url,
            external_url_expires_at=external_url_expiry(url),
            params_used={"externalImageUrl": url},
            created_at=now,
        )
        for index, url in enumerate(urls)
    ]
    GenerationResult.objects.bulk_create(rows)
    return [row.pk for row in rows]


def reset_results() -> None:
    """Every result back to `pending`, and the storage folder empty."""
    from django.conf import settings
    from django.db.models import F

    from generations.models import GenerationResult

    GenerationResult.objects.update(
        storage_status=GenerationResult.StorageStatus.PENDING,
        storage_claim=None,
        storage_claimed_at=None,
        storage_backend="",
        storage_key="",
        thumbnail_key="",
        stored_at=None,
        storage_attempts=0,
        image_url=F("external_url"),
    )
    for folder in ("generations", "thumbnails"):
        shutil.rmtree(Path(settings.MEDIA_ROOT) / folder, ignore_errors=True)


def stored_count() -> int:
    from generations.models import GenerationResult

    return GenerationResult.objects.filter(
        storage_status=GenerationResult.StorageStatus.STORED
    ).count()


def raw_copy(urls: list[str], *, concurrency: int) -> float:
    """The baseline: plain requests and threads, same URLs, straight to files. Seconds."""
    import requests

    target = Path(tempfile.mkdtemp(prefix="raw-", dir=_scratch()))

    def download(numbered: tuple[int, str]) -> int:
        index, url = numbered
        with requests.get(url, stream=True, timeout=(10, 60)) as response:
            response.raise_for_status()
            with (target / f"{index}.jpg").open("wb") as fh:
                for chunk in response.iter_content(64 * 1024):
                    fh.write(chunk)
        return index

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        done = list(pool.map(download, enumerate(urls)))
    elapsed = time.perf_counter() - started
    shutil.rmtree(target, ignore_errors=True)
    assert len(done) == len(urls)
    return elapsed


@contextmanager
def fsync_patched_out() -> Iterator[None]:
    """The baseline of the fsync row: every `os.fsync` of this process does nothing."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def restore(*, count: int, concurrency: int) -> float:
    """`restore_images --sync --concurrency C`, as an operator runs it. Seconds."""
    from django.core.management import call_command

    reset_results()
    started = time.perf_counter()
    call_command("restore_images", sync=True, concurrency=concurrency, verbosity=0)
    elapsed = time.perf_counter() - started
    stored = stored_count()
    if stored != count:
        raise RuntimeError(f"restore_images stored {stored} of {count}")
    return elapsed


class Workers:
    """Two real Celery worker processes: A consumes queues solo and pair, B only pair."""

    def __init__(self, *, concurrency: int, log_dir: Path) -> None:
        from django.conf import settings

        base = settings.CELERY_TASK_DEFAULT_QUEUE
        self.solo_queue = f"{base}-solo"
        self.pair_queue = f"{base}-pair"
        self.logs = [log_dir / "worker-a.log", log_dir / "worker-b.log"]
        self.processes = [
            self._start("a", [self.solo_queue, self.pair_queue], concurrency, self.logs[0]),
            self._start("b", [self.pair_queue], concurrency, self.logs[1]),
        ]

    def _start(
        self, name: str, queues: list[str], concurrency: int, log: Path
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--queues",
                ",".join(queues),
                "--hostname",
                f"bench-{name}-{time.time_ns()}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process, log in zip(self.processes, self.logs, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
            if all(b"ready." in log.read_bytes() for log in self.logs):
                return
            time.sleep(0.2)
        raise RuntimeError("Celery workers not ready in time")

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)

    def purge(self) -> None:
        import redis
        from django.conf import settings

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        for queue in (self.solo_queue, self.pair_queue):
            client.delete(queue, f"_kombu.binding.{queue}")


def through_celery(*, ids: list[int], queue: str, timeout: float) -> float:
    """Queue every id on `queue`; seconds until the last one is stored."""
    from generations.tasks import store_result_image

    reset_results()
    started = time.perf_counter()
    for result_id in ids:
        store_result_image.apply_async(args=[result_id], queue=queue, retry=False)
    deadline = time.monotonic() + timeout
    while stored_count() < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers stored {stored_count()} of {len(ids)} in {timeout}s")
        time.sleep(0.05)
    return time.perf_counter() - started


def _scratch() -> Path:
    from django.conf import settings

    folder = Path(settings.VAR_DIR) / "scratch"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def suite(args: argparse.Namespace) -> dict[str, Any]:
    from generations.models import GenerationResult

    ids = prepare_results(count=args.count, megabytes=args.megabytes)
    urls = list(GenerationResult.objects.order_by("pk").values_list("external_url", flat=True))
    count = len(ids)
    # Warm both paths once (imports, the demo's cache, the page cache), untimed.
    raw_copy(urls[: args.concurrency], concurrency=args.concurrency)
    restore(count=count, concurrency=args.concurrency)

    samples: dict[str, list[float]] = {"raw": [], "restore": [], "restore_no_fsync": []}
    for rep in range(args.reps):
        samples["raw"].append(count / raw_copy(urls, concurrency=args.concurrency))
        # With and without fsync back to back, in alternating order.
        for durable in (True, False) if rep % 2 == 0 else (False, True):
            if durable:
                seconds = restore(count=count, concurrency=args.concurrency)
                samples["restore"].append(count / seconds)
            else:
                with fsync_patched_out():
                    seconds = restore(count=count, concurrency=args.concurrency)
                samples["restore_no_fsync"].append(count / seconds)

    celery: dict[str, list[float]] = {"raw": [], "celery_1": [], "celery_2": []}
    if not args.skip_celery:
        workers = Workers(concurrency=args.concurrency, log_dir=Path(args.log_dir))
        try:
            workers.wait_ready()
            through_celery(ids=ids, queue=workers.pair_queue, timeout=args.timeout)  # warm
            for _ in range(args.reps):
                celery["raw"].append(count / raw_copy(urls, concurrency=args.concurrency))
                celery["celery_1"].append(
                    count / through_celery(ids=ids, queue=workers.solo_queue, timeout=args.timeout)
                )
                celery["celery_2"].append(
                    count / through_celery(ids=ids, queue=workers.pair_queue, timeout=args.timeout)
                )
        finally:
            workers.stop()
            workers.purge()
    return {
        "count": count,
        "bytes_each": Path(_first_stored_path()).stat().st_size if count else 0,
        "restore": samples,
        "celery": celery,
        "medians": {
            "raw": median(samples["raw"]),
            "restore": median(samples["restore"]),
            "restore_no_fsync": median(samples["restore_no_fsync"]),
            "celery_raw": median(celery["raw"]),
            "celery_1": median(celery["celery_1"]),
            "celery_2": median(celery["celery_2"]),
        },
    }


def start_worker(
    *, name: str, queues: list[str], log: Path, pool: str = "prefork", concurrency: int = 2
) -> subprocess.Popen[bytes]:
    """One `celery worker` process on `queues`, read in that order."""
    return subprocess.Popen(
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--queues",
            ",".join(queues),
            "--hostname",
            f"bench-{name}-{time.time_ns()}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_worker_ready(process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
        if b"ready." in log.read_bytes():
            return
        time.sleep(0.2)
    raise RuntimeError("Celery worker not ready in time")


def stored_backlog(*, count: int) -> list[int]:
    """`count` results stored without their thumbnail, each a hard link to one stored
    JPEG: what the derivatives queue holds after a burst of storing."""
    from django.conf import settings
    from django.db.models import F, Value
    from django.db.models.functions import Concat

    from generations.models import GenerationResult
    from generations.services.storing import StoreOutcome, result_store_image

    (first,) = prepare_results(count=1, megabytes=1.5)
    assert result_store_image(result_id=first) is StoreOutcome.STORED
    model = GenerationResult.objects.get(pk=first)
    rows = [
        GenerationResult(
            generation_id=model.generation_id,
            upstream_model_id="bench",
            image_index=index,
            status=model.status,
            storage_status=model.storage_status,
            storage_backend=model.storage_backend,
            content_type=model.content_type,
            byte_size=model.byte_size,
            sha256=model.sha256,
            width=model.width,
            height=model.height,
            stored_at=model.stored_at,
            external_url=model.external_url,
            image_url=model.image_url,
            params_used={},
            created_at=model.created_at,
        )
        for index in range(count)
    ]
    ids = [row.pk for row in GenerationResult.objects.bulk_create(rows)]
    GenerationResult.objects.filter(pk__in=ids).update(
        storage_key=Concat(Value("generations/"), F("id"), Value(".jpg"))
    )
    media = Path(settings.MEDIA_ROOT)
    for result_id in ids:
        os.link(media / model.storage_key, media / f"generations/{result_id}.jpg")
    return ids


def reset_burst(*, burst: list[int], backlog: list[int]) -> None:
    """The burst back to `pending` with its objects gone; the backlog without thumbnails."""
    from django.conf import settings
    from django.db.models import F

    from generations.models import GenerationResult

    media = Path(settings.MEDIA_ROOT)
    for key in GenerationResult.objects.filter(pk__in=burst).values_list("storage_key", flat=True):
        if key:
            (media / key).unlink(missing_ok=True)
    GenerationResult.objects.filter(pk__in=burst).update(
        storage_status=GenerationResult.StorageStatus.PENDING,
        storage_claim=None,
        storage_claimed_at=None,
        storage_backend="",
        storage_key="",
        stored_at=None,
        storage_attempts=0,
        image_url=F("external_url"),
    )
    GenerationResult.objects.filter(pk__in=burst + backlog).update(thumbnail_key="")
    shutil.rmtree(media / "thumbnails", ignore_errors=True)


def burst_seconds(*, burst: list[int], backlog: list[int], timeout: float) -> float:
    """Queue the backlog's derivatives (if any), then the burst; seconds from the first
    store task queued until the whole burst is stored."""
    from generations.models import GenerationResult
    from generations.tasks import make_result_derivatives, store_result_image

    for result_id in backlog:
        make_result_derivatives.apply_async(args=[result_id], retry=False)
    started = time.perf_counter()
    for result_id in burst:
        store_result_image.apply_async(args=[result_id], retry=False)
    stored = GenerationResult.objects.filter(
        pk__in=burst, storage_status=GenerationResult.StorageStatus.STORED
    )
    deadline = time.monotonic() + timeout
    while stored.count() < len(burst):
        if time.monotonic() > deadline:
            raise RuntimeError(f"stored {stored.count()} of {len(burst)} in {timeout}s")
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    left = GenerationResult.objects.filter(pk__in=backlog, thumbnail_key="").count()
    if backlog and not left:
        raise RuntimeError("the backlog ran out before the burst was stored: make it longer")
    return elapsed


def _queue_length(*, derivatives: bool) -> int:
    import redis
    from django.conf import settings

    queue = settings.DERIVATIVES_QUEUE if derivatives else settings.CELERY_TASK_DEFAULT_QUEUE
    return int(redis.Redis.from_url(settings.CELERY_BROKER_URL).llen(queue))


def _drain(*, idle_seconds: float = 1.0, timeout: float = 300) -> None:
    """Empty the derivatives queue, then wait for the worker's tasks in flight."""
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(settings.DERIVATIVES_QUEUE)
    time.sleep(idle_seconds)
    deadline = time.monotonic() + timeout
    while _queue_length(derivatives=False) or _queue_length(derivatives=True):
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not go idle")
        time.sleep(0.2)
    time.sleep(idle_seconds)


def burst(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings

    burst_ids = prepare_results(count=args.count, megabytes=args.megabytes)
    backlog_ids = stored_backlog(count=args.backlog)
    log = Path(args.log_dir) / "worker-burst.log"
    # As the Procfile starts it: one process, both queues, storing first.
    worker = start_worker(
        name="burst",
        queues=[settings.CELERY_TASK_DEFAULT_QUEUE, settings.DERIVATIVES_QUEUE],
        log=log,
    )
    samples: dict[str, list[float]] = {"empty": [], "backlog": []}
    try:
        wait_worker_ready(worker, log)
        reset_burst(burst=burst_ids, backlog=backlog_ids)
        burst_seconds(burst=burst_ids, backlog=[], timeout=args.timeout)  # warm
        for rep in range(args.reps):
            for with_backlog in (False, True) if rep % 2 == 0 else (True, False):
                _drain()
                reset_burst(burst=burst_ids, backlog=backlog_ids)
                seconds = burst_seconds(
                    burst=burst_ids,
                    backlog=backlog_ids if with_backlog else [],
                    timeout=args.timeout,
                )
                samples["backlog" if with_backlog else "empty"].append(seconds)
    finally:
        stop_process(worker)
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        client.delete(settings.CELERY_TASK_DEFAULT_QUEUE, settings.DERIVATIVES_QUEUE)
    return {
        "count": len(burst_ids),
        "backlog": len(backlog_ids),
        "samples": samples,
        "medians": {name: median(values) for name, values in samples.items()},
    }


def _first_stored_path() -> str:
    from django.conf import settings

    from generations.models import GenerationResult

    key = GenerationResult.objects.exclude(storage_key="").values_list("storage_key", flat=True)[0]
    return str(Path(settings.MEDIA_ROOT) / key)


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """Profile the storing path, one image after another in this thread (pyinstrument)."""
    from pyinstrument import Profiler

    from generations.services.storing import result_store_image

    ids = prepare_results(count=args.count, megabytes=args.megabytes)
    result_store_image(result_id=ids[0])  # warm imports outside the profile
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    with profiler:
        for result_id in ids[1:]:
            result_store_image(result_id=result_id)
    elapsed = time.perf_counter() - started
    text = profiler.output_text(unicode=False, color=False)
    Path(args.out).write_text(text)
    return {"count": len(ids) - 1, "seconds": elapsed, "profile": args.out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["suite", "profile", "burst"])
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--megabytes", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--log-dir", default=tempfile.gettempdir())
    parser.add_argument("--out", default="storing-profile.txt")
    args = parser.parse_args()
    django_setup()
    report({"suite": suite, "profile": profile, "burst": burst}[args.mode](args))


if __name__ == "__main__":
    main()
