"""Image serving, run as a child of run.py.

One image of about 1.5 MB is stored by the product's own path; a copy of the stored
file is put in a static folder that whitenoise serves. gunicorn then runs as the
Procfile runs it (2 workers, 8 threads each), and a small keep-alive client of ours
(threads and http.client, loopback only, bounded in requests and in seconds) loads,
turn about:

- `/api/images/ID` with a Bearer token (the product: auth, a row, the file);
- `/static/bench/IMAGE` (whitenoise: the baseline for the same bytes, same server);
- `/api/images/ID` with `If-None-Match` set to its ETag (the 304 path).

Usage: python -m bench.serving --seconds 2 --clients 8 --reps 3
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from bench.common import (
    PYTHON,
    REPO,
    django_setup,
    free_port,
    median,
    report,
    stop_process,
    wait_for_port,
)

MAX_REQUESTS_PER_RUN = 20_000


def load(
    port: int, path: str, headers: dict[str, str], *, clients: int, seconds: float, status: int
) -> dict[str, float]:
    """Requests per second with `clients` keep-alive connections for about `seconds`."""
    done = [0] * clients
    body_bytes = [0] * clients
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds
    budget = MAX_REQUESTS_PER_RUN // clients

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while done[index] < budget and time.perf_counter() < stop_at:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                if response.status != status:
                    errors.append(f"{path}: {response.status} {body[:200]!r}")
                    return
                done[index] += 1
                body_bytes[index] += len(body)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{path}: {exc!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    return {"rps": sum(done) / elapsed, "requests": sum(done), "bytes": sum(body_bytes)}


def prepare(static_dir: Path) -> tuple[int, str, str, str]:
    """Store one image, copy it for whitenoise; return (id, token, static name, etag)."""
    from django.conf import settings
    from django.contrib.auth.models import User

    from bench.storing import prepare_results
    from generations.models import ApiToken, GenerationResult
    from generations.services.storing import StoreOutcome, result_store_image

    result_id = prepare_results(count=1, megabytes=1.5)[0]
    outcome = result_store_image(result_id=result_id)
    assert outcome is StoreOutcome.STORED, outcome
    result = GenerationResult.objects.get(pk=result_id)
    name = f"image-{result_id}.{result.storage_key.rsplit('.', 1)[1]}"
    shutil.copyfile(Path(settings.MEDIA_ROOT) / result.storage_key, static_dir / name)
    user = User.objects.create_user(username="bench-api", password="x", is_staff=True)
    key = ApiToken.new_key()
    ApiToken.objects.create(user=user, prefix=key[:10], key_hash=ApiToken.hash_key(key))
    return result_id, key, name, f'"{result.sha256}"'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    static_dir = Path(os.environ["GENVAULT_BENCH_STATIC_DIR"])
    static_dir.mkdir(parents=True, exist_ok=True)
    django_setup()
    result_id, token, static_name, etag = prepare(static_dir)

    port = free_port()
    log = (static_dir.parent / "gunicorn.log").open("wb")
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
            "--timeout",
            "180",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    auth = {"Authorization": f"Bearer {token}"}
    targets = {
        "api_200": (f"/api/images/{result_id}", auth, 200),
        "static_200": (f"/static/bench/{static_name}", {}, 200),
        "api_304": (f"/api/images/{result_id}", {**auth, "If-None-Match": etag}, 304),
    }
    samples: dict[str, list[float]] = {name: [] for name in targets}
    try:
        wait_for_port(port)
        for path, headers, status in targets.values():  # warm every worker and path
            load(port, path, headers, clients=args.clients, seconds=0.5, status=status)
        for _ in range(args.reps):
            for name, (path, headers, status) in targets.items():
                run = load(
                    port, path, headers, clients=args.clients, seconds=args.seconds, status=status
                )
                samples[name].append(run["rps"])
    finally:
        stop_process(server)
        log.close()
    report(
        {
            "samples": samples,
            "medians": {name: median(values) for name, values in samples.items()},
            "bytes": (static_dir / static_name).stat().st_size,
            "clients": args.clients,
            "seconds": args.seconds,
        }
    )


if __name__ == "__main__":
    main()
