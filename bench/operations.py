"""The operator's commands at scale, each against the raw tool for the same job, run as a
child of run.py.

`prepare` writes N stored images straight into the storage folder (one 2048x2048 JPEG
of noise, about 1.4 MiB, encoded once and varied by a comment segment so that every
file's SHA-256 differs, plus one WebP thumbnail each) and their rows, marked stored
with the right size and SHA-256, as the storing worker leaves them. Each other mode
then times the command (through call_command, so Python's start-up is not timed)
and its baseline on the same files, repetition by repetition, in alternating order:

- verify: `verify_images --concurrency C` against `sha256sum -c` of the same files'
  checksums, split in C lists run at once by `xargs -P C`;
- export: `export_backup --images` against `zip -0 -r` of the storage folder;
- import: `import_backup` of that bundle into an empty database (a copy of a freshly
  migrated one, made before each repetition) and storage, against `unzip` of it;
- migrate: `migrate_storage --to s3 --keep-source --concurrency C` against `rclone copy
  --transfers C` of the storage folder, both to moto's S3 server in a process of its
  own on loopback (rclone configured by environment variables alone).

With `--profile FILE`, a mode instead runs its command's work once, untimed, under
pyinstrument, writes the profile to FILE and reports where the time went, by the
function of ours it was spent under. pyinstrument samples one thread, so the threaded
commands' per-image work is run one image after another in the main thread.

Usage: python -m bench.operations prepare --count N
       python -m bench.operations verify --reps R --concurrency C
       python -m bench.operations export --reps R --bundle FILE
       python -m bench.operations import --reps R --bundle FILE --empty-db FILE
       python -m bench.operations migrate --reps R --concurrency C
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REPO,
    django_setup,
    free_port,
    loopback_server,
    median,
    report,
)

WIDTH = HEIGHT = 2048
RESULTS_PER_GENERATION = 4
S3_ACCESS_KEY = "genvault-bench-key"
S3_SECRET_KEY = "genvault-bench-secret"
S3_REGION = "us-east-1"
PRODUCT_BUCKET = "genvault-bench-product"
RCLONE_BUCKET = "genvault-bench-rclone"
RCLONE_REMOTE = "GENVAULTBENCH"  # configured by RCLONE_CONFIG_<REMOTE>_* variables
STORAGE_FOLDERS = ("generations", "thumbnails")


# --- the stored images -------------------------------------------------------------


def _photo_jpeg() -> tuple[bytes, bytes]:
    """One 2048x2048 JPEG that compresses like a busy photo, and its WebP thumbnail."""
    from PIL import Image

    noise = Image.effect_noise((WIDTH, HEIGHT), 32).convert("L")
    gradient = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    photo = Image.merge("RGB", (noise, gradient, noise.transpose(Image.Transpose.ROTATE_90)))
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=85)
    photo.thumbnail((512, 512))
    webp = io.BytesIO()
    photo.save(webp, "WEBP", quality=80)
    return jpeg.getvalue(), webp.getvalue()


def _varied(jpeg: bytes, index: int) -> bytes:
    """The same picture with a comment segment of its own right after the SOI marker."""
    comment = f"genvault bench image {index:08d}".encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return jpeg[:2] + segment + jpeg[2:]


def prepare(count: int) -> dict[str, Any]:
    """Write `count` stored images and their rows; nothing else is in the database."""
    from django.conf import settings
    from django.urls import reverse
    from django.utils import timezone

    from generations.models import Generation, GenerationResult
    from storage_backends import images as image_storage

    jpeg, webp = _photo_jpeg()
    media = Path(settings.MEDIA_ROOT)
    for folder in STORAGE_FOLDERS:
        (media / folder).mkdir(parents=True, exist_ok=True)
    now = timezone.now()
    generations = Generation.objects.bulk_create(
        Generation(prompt_text=f"bench: stored image batch {n}", created_at=now)
        for n in range(-(-count // RESULTS_PER_GENERATION))
    )
    rows = []
    for index in range(count):
        result_id = index + 1
        data = _varied(jpeg, index)
        key = image_storage.image_key(result_id=result_id, extension="jpg")
        thumb = image_storage.thumbnail_key(result_id=result_id)
        (media / key).write_bytes(data)
        (media / thumb).write_bytes(webp)
        external = f"https://images.example.test/bench/{result_id}.jpeg"
        rows.append(
            GenerationResult(
                pk=result_id,
                generation=generations[index // RESULTS_PER_GENERATION],
                upstream_model_id="bench",
                image_index=index % RESULTS_PER_GENERATION,
                status=GenerationResult.Status.SUCCESS,
                storage_status=GenerationResult.StorageStatus.STORED,
                storage_backend="local",
                storage_key=key,
                thumbnail_key=thumb,
                content_type="image/jpeg",
                byte_size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                width=WIDTH,
                height=HEIGHT,
                external_url=external,
                image_url=reverse("api:image", args=[result_id]),
                params_used={"externalImageUrl": external},
                stored_at=now,
                created_at=now,
            )
        )
    GenerationResult.objects.bulk_create(rows, batch_size=500)
    return {
        "count": count,
        "bytes_each": len(jpeg),
        "thumbnail_bytes": len(webp),
        "total_bytes": sum(r.byte_size or 0 for r in rows) + count * len(webp),
    }


def _stored_files() -> list[tuple[str, str]]:
    """(path under the storage folder, SHA-256) of every stored image, as the rows say."""
    from generations.models import GenerationResult

    return list(
        GenerationResult.objects.filter(storage_status=GenerationResult.StorageStatus.STORED)
        .order_by("pk")
        .values_list("storage_key", "sha256")
    )


def _media() -> Path:
    from django.conf import settings

    return Path(settings.MEDIA_ROOT)


def _scratch() -> Path:
    from django.conf import settings

    folder = Path(settings.VAR_DIR) / "scratch"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- timing ------------------------------------------------------------------------


def _seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _side_by_side(
    *,
    reps: int,
    count: int,
    product: Callable[[], object],
    baseline: Callable[[], object],
    before_each: Callable[[], object] = lambda: None,
) -> dict[str, Any]:
    """Images per second of both, a repetition at a time, the order alternating so that
    neither always runs on the warmer (or the more fragmented) machine."""
    samples: dict[str, list[float]] = {"product": [], "baseline": []}
    for rep in range(reps):
        order = [("product", product), ("baseline", baseline)]
        for name, work in order if rep % 2 == 0 else order[::-1]:
            before_each()
            samples[name].append(count / _seconds(work))
    return {
        "count": count,
        "samples": samples,
        "medians": {name: median(values) for name, values in samples.items()},
    }


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} failed ({completed.returncode}): "
            f"{completed.stdout[-1500:]}{completed.stderr[-1500:]}"
        )


def _profiled(work: Callable[[], object], out: Path) -> dict[str, Any]:
    """Run `work` once under pyinstrument; write its profile to `out`; say where time went."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    started = time.perf_counter()
    with profiler:
        work()
    seconds = time.perf_counter() - started
    out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    session = profiler.last_session
    root = session.root_frame() if session else None
    return {"seconds": seconds, "profile": str(out), "where": _time_by_owner(root)}


_OUR_CODE = tuple(str(REPO / app) + os.sep for app in ("generations", "storage_backends"))


def _time_by_owner(root: Any) -> list[tuple[str, float]]:
    """Share of the sampled time spent under each function of ours (the innermost one on
    the stack), with the library call it was spent in when there is one, largest first."""
    if root is None or not root.time:
        return []
    shares: dict[str, float] = defaultdict(float)

    def walk(frame: Any, owner: str, inside: str) -> None:
        path = frame.file_path or ""
        name = f"{frame.class_name}.{frame.function}" if frame.class_name else frame.function
        if path.startswith(_OUR_CODE):
            owner, inside = name, ""
        elif not inside and owner != "other":
            inside = name
        label = f"{owner} ({inside})" if inside else owner
        shares[label] += frame.total_self_time  # counts its synthetic children's time too
        for child in frame.children:
            if not child.is_synthetic:
                walk(child, owner, inside)

    walk(root, "other", "")
    total = root.time
    ranked = sorted(shares.items(), key=lambda item: item[1], reverse=True)
    return [(label, round(seconds / total, 3)) for label, seconds in ranked[:6]]


# --- verify_images against sha256sum -c ----------------------------------------------


def verify(args: argparse.Namespace) -> dict[str, Any]:
    from django.core.management import call_command

    from generations.services.maintenance import storage_verify

    media = _media()
    files = _stored_files()
    lists = []
    for part in range(args.concurrency):
        path = _scratch() / f"sha256sums.{part}"
        path.write_text("".join(f"{sha}  {key}\n" for key, sha in files[part :: args.concurrency]))
        lists.append(str(path))

    def product() -> None:
        call_command("verify_images", concurrency=args.concurrency, verbosity=0)

    def baseline() -> None:
        command = ["xargs", "-P", str(args.concurrency), "-n", "1", "sha256sum", "-c", "--quiet"]
        completed = subprocess.run(
            command,
            input="\n".join(lists),
            cwd=media,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"sha256sum -c failed: {completed.stdout[-1500:]}")

    checked = storage_verify(concurrency=args.concurrency)  # warm, and proves the set sound
    if checked.checked != len(files) or checked.problems:
        raise RuntimeError(f"verify before timing: {checked.summary()}")
    baseline()
    if args.profile:
        return _profiled(_verify_in_this_thread, Path(args.profile))
    return _side_by_side(reps=args.reps, count=len(files), product=product, baseline=baseline)


def _verify_in_this_thread() -> None:
    """What each of verify_images' threads does for a row, for every row, in this thread
    (the one pyinstrument samples)."""
    from generations.services.maintenance import _check_row, stored_rows

    for row in stored_rows():
        check = _check_row(row)
        if check.broken or check.thumbnail_missing:
            raise RuntimeError(f"verify: {check}")


# --- export_backup --images against zip -0 -r ----------------------------------------


def export(args: argparse.Namespace) -> dict[str, Any]:
    from django.core.management import call_command

    media = _media()
    count = len(_stored_files())
    bundle = Path(args.bundle)
    raw_zip = _scratch() / "raw.zip"

    def product() -> None:
        call_command("export_backup", str(bundle), images=True, verbosity=0)

    def baseline() -> None:
        _run(["zip", "-0", "-r", "-q", str(raw_zip), *STORAGE_FOLDERS], cwd=media)

    def remove_outputs() -> None:
        bundle.unlink(missing_ok=True)
        raw_zip.unlink(missing_ok=True)

    remove_outputs()
    product()  # warm, and proves the bundle whole
    with zipfile.ZipFile(bundle) as archive:
        images = [n for n in archive.namelist() if n.endswith(".jpg")]
    if len(images) != count:
        raise RuntimeError(f"the export holds {len(images)} of {count} images")
    baseline()
    if args.profile:
        remove_outputs()
        return _profiled(product, Path(args.profile))
    out = _side_by_side(
        reps=args.reps, count=count, product=product, baseline=baseline, before_each=remove_outputs
    )
    remove_outputs()
    product()  # leave the bundle for the import
    out["bundle_bytes"] = bundle.stat().st_size
    return out


# --- import_backup against unzip -----------------------------------------------------


def import_(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from generations.models import GenerationResult

    bundle = Path(args.bundle)
    media = _media()
    database = Path(settings.DATABASES["default"]["NAME"])
    unzipped = _scratch() / "unzipped"
    with zipfile.ZipFile(bundle) as archive:
        count = sum(1 for n in archive.namelist() if n.endswith(".jpg"))

    def empty_database_and_storage() -> None:
        connections.close_all()
        shutil.copyfile(args.empty_db, database)
        for folder in STORAGE_FOLDERS:
            shutil.rmtree(media / folder, ignore_errors=True)
        shutil.rmtree(unzipped, ignore_errors=True)

    def product() -> None:
        call_command("import_backup", str(bundle), verbosity=0)
        stored = GenerationResult.objects.filter(
            storage_status=GenerationResult.StorageStatus.STORED
        ).count()
        if stored != count:
            raise RuntimeError(f"import_backup stored {stored} of {count}")

    def baseline() -> None:
        _run(["unzip", "-q", "-o", str(bundle), "-d", str(unzipped)])

    empty_database_and_storage()
    product()  # warm
    baseline()
    if args.profile:
        empty_database_and_storage()
        return _profiled(product, Path(args.profile))
    out = _side_by_side(
        reps=args.reps,
        count=count,
        product=product,
        baseline=baseline,
        before_each=empty_database_and_storage,
    )
    empty_database_and_storage()
    return out


# --- migrate_storage --to s3 against rclone copy --------------------------------------


@contextmanager
def moto_endpoint(log: Path) -> Iterator[str]:
    """moto's S3 server in a process of its own on a free loopback port; yields its URL."""
    port = free_port()
    command = [str(Path(PYTHON).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with loopback_server(command, port=port, log=log) as url:
        yield url


def _s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=S3_REGION,
        config=Config(s3={"addressing_style": "path"}),
    )


def _empty_bucket(client: Any, bucket: str) -> int:
    """Delete every object of `bucket`; how many there were."""
    deleted = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


def migrate(args: argparse.Namespace) -> dict[str, Any]:
    from django.core.management import call_command

    from generations.models import GenerationResult
    from generations.services.batches import ids_newest_first
    from generations.services.maintenance import result_migrate_storage, results_to_migrate

    endpoint = os.environ["STORAGE_S3_ENDPOINT"]
    client = _s3_client(endpoint)
    for bucket in (PRODUCT_BUCKET, RCLONE_BUCKET):
        client.create_bucket(Bucket=bucket)
    media = _media()
    count = len(_stored_files())
    remote = f"RCLONE_CONFIG_{RCLONE_REMOTE}_"
    rclone_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(_scratch()),
        "RCLONE_CONFIG": str(_scratch() / "rclone.conf"),  # none: the variables say it all
        remote + "TYPE": "s3",
        remote + "PROVIDER": "Other",
        remote + "ACCESS_KEY_ID": S3_ACCESS_KEY,
        remote + "SECRET_ACCESS_KEY": S3_SECRET_KEY,
        remote + "ENDPOINT": endpoint,
        remote + "REGION": S3_REGION,
        remote + "FORCE_PATH_STYLE": "true",
    }

    def product() -> None:
        call_command(
            "migrate_storage", to="s3", keep_source=True, concurrency=args.concurrency, verbosity=0
        )

    def product_in_this_thread() -> None:
        """What each of migrate_storage's threads does for a row, for every row, in this
        thread (the one pyinstrument samples)."""
        for result_id in ids_newest_first(results_to_migrate(target="s3")):
            if not result_migrate_storage(result_id=result_id, target="s3", keep_source=True):
                raise RuntimeError(f"result {result_id} was not moved")

    def baseline() -> None:
        _run(
            [
                "rclone",
                "copy",
                "--quiet",
                "--transfers",
                str(args.concurrency),
                str(media),
                f"{RCLONE_REMOTE}:{RCLONE_BUCKET}",
            ],
            env=rclone_env,
        )

    def back_to_local() -> None:
        GenerationResult.objects.filter(storage_backend="s3").update(storage_backend="local")
        for bucket in (PRODUCT_BUCKET, RCLONE_BUCKET):
            _empty_bucket(client, bucket)

    back_to_local()
    product()  # warm, and proves both copies whole
    baseline()
    moved = GenerationResult.objects.filter(storage_backend="s3").count()
    copied = {bucket: _empty_bucket(client, bucket) for bucket in (PRODUCT_BUCKET, RCLONE_BUCKET)}
    if moved != count or set(copied.values()) != {2 * count}:
        raise RuntimeError(f"moved {moved} rows of {count}; objects per bucket {copied}")
    if args.profile:
        back_to_local()
        out = _profiled(product_in_this_thread, Path(args.profile))
    else:
        out = _side_by_side(
            reps=args.reps,
            count=count,
            product=product,
            baseline=baseline,
            before_each=back_to_local,
        )
    back_to_local()
    return out


def _with_moto(args: argparse.Namespace) -> dict[str, Any]:
    """Start moto, point the s3 backend at it (before Django reads its settings), migrate."""
    log = Path(os.environ.get("GENVAULT_VAR_DIR", tempfile.gettempdir())) / "moto.log"
    with moto_endpoint(log) as endpoint:
        os.environ.update(
            {
                "STORAGE_S3_ENDPOINT": endpoint,
                "STORAGE_S3_BUCKET": PRODUCT_BUCKET,
                "STORAGE_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
                "STORAGE_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                "STORAGE_S3_REGION": S3_REGION,
            }
        )
        django_setup()
        return migrate(args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["prepare", "verify", "export", "import", "migrate"])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--bundle", default=str(Path(tempfile.gettempdir()) / "bundle.zip"))
    parser.add_argument("--empty-db", help="a freshly migrated database, copied before each rep")
    parser.add_argument("--profile", help="profile one untimed run into this file instead")
    args = parser.parse_args()
    if args.mode == "migrate":
        report(_with_moto(args))
        return
    django_setup()
    run = {"prepare": lambda a: prepare(a.count), "verify": verify, "export": export}
    report(run[args.mode](args) if args.mode in run else import_(args))


if __name__ == "__main__":
    main()
