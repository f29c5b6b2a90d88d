"""The image storage: which backend holds an object, object keys, reads and writes.

Everything outside this app asks here for "the image storage"; only this app knows
which classes implement it and that one of them speaks S3.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

from .conf import BACKENDS

logger = logging.getLogger(__name__)

IMAGE_PREFIX = "generations"
THUMBNAIL_PREFIX = "thumbnails"


class StorageUnavailable(Exception):
    """The storage refused or failed a read or write (endpoint down, disk full...)."""


def active_backend() -> str:
    """The backend that new objects are written to."""
    return str(settings.STORAGE_MODE)


def configured_backends() -> list[str]:
    return [name for name in BACKENDS if f"images_{name}" in settings.STORAGES]


def image_storage(backend: str | None = None) -> Storage:
    """The storage for `backend` (the active one when None)."""
    name = backend or active_backend()
    if name not in BACKENDS:
        raise ImproperlyConfigured(f"unknown storage backend {name!r}")
    alias = f"images_{name}"
    if alias not in settings.STORAGES:
        raise ImproperlyConfigured(
            f"storage backend {name!r} is not configured (set the STORAGE_S3_* variables)"
        )
    return storages[alias]


def image_key(*, result_id: int, extension: str) -> str:
    """The object key of a result's image: made from its id, never from user input."""
    if extension not in ("jpg", "png", "webp"):
        raise ValueError(f"unexpected image extension {extension!r}")
    return f"{IMAGE_PREFIX}/{int(result_id)}.{extension}"


def thumbnail_key(*, result_id: int) -> str:
    return f"{THUMBNAIL_PREFIX}/{int(result_id)}.webp"


def save_object_from_path(*, backend: str, key: str, path: Path) -> None:
    """Write the file at `path` to `key`, streaming; the same key again overwrites."""
    storage = image_storage(backend)
    try:
        with path.open("rb") as fh:
            saved = storage.save(key, File(fh, name=key))
    except Exception as exc:
        raise StorageUnavailable(f"could not write {key}: {_describe(exc)}") from exc
    if saved != key:  # pragma: no cover - both backends overwrite
        raise StorageUnavailable(f"storage wrote {saved!r} instead of {key!r}")


def save_object_bytes(*, backend: str, key: str, data: bytes) -> None:
    storage = image_storage(backend)
    try:
        storage.save(key, ContentFile(data, name=key))
    except Exception as exc:
        raise StorageUnavailable(f"could not write {key}: {_describe(exc)}") from exc


def delete_objects(*, backend: str, keys: list[str]) -> None:
    """Delete objects, ignoring those already gone; failures are logged, not raised."""
    if not backend:
        return
    try:
        storage = image_storage(backend)
    except ImproperlyConfigured:
        logger.warning("cannot delete %s: backend %s not configured", keys, backend)
        return
    for key in keys:
        if not key:
            continue
        try:
            storage.delete(key)
        except Exception as exc:
            logger.warning("could not delete %s from %s: %s", key, backend, _describe(exc))


def open_object(*, backend: str, key: str) -> IO[bytes]:
    try:
        return image_storage(backend).open(key, "rb")
    except (FileNotFoundError, SuspiciousFileOperation):  # a key outside the storage: a 400
        raise
    except Exception as exc:
        if _is_not_found(exc):
            raise FileNotFoundError(key) from exc
        raise StorageUnavailable(f"could not read {key}: {_describe(exc)}") from exc


def iter_object_chunks(*, backend: str, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """The object's bytes in chunks, never the whole object in memory.

    S3 objects are read from the response stream: django-storages' S3File would
    first download the whole object into memory.
    """
    storage = image_storage(backend)
    bucket = getattr(storage, "bucket", None)
    if bucket is None:
        with open_object(backend=backend, key=key) as fh:
            while chunk := fh.read(chunk_size):
                yield chunk
        return
    try:
        body = bucket.Object(key).get()["Body"]
    except Exception as exc:
        if _is_not_found(exc):
            raise FileNotFoundError(key) from exc
        raise StorageUnavailable(f"could not read {key}: {_describe(exc)}") from exc
    try:
        yield from body.iter_chunks(chunk_size)
    except Exception as exc:
        raise StorageUnavailable(f"could not read {key}: {_describe(exc)}") from exc
    finally:
        body.close()


def object_exists(*, backend: str, key: str) -> bool:
    try:
        return bool(image_storage(backend).exists(key))
    except Exception as exc:
        raise StorageUnavailable(f"could not check {key}: {_describe(exc)}") from exc


def object_size(*, backend: str, key: str) -> int:
    try:
        return int(image_storage(backend).size(key))
    except Exception as exc:
        if _is_not_found(exc):
            raise FileNotFoundError(key) from exc
        raise StorageUnavailable(f"could not stat {key}: {_describe(exc)}") from exc


def redirect_url(*, backend: str, key: str, download_name: str | None = None) -> str | None:
    """A URL the client can fetch the object from directly: presigned or public (S3 only)."""
    if backend != "s3":
        return None
    storage: Any = image_storage(backend)  # django-storages' S3Storage.url takes parameters
    if download_name and not getattr(storage, "public_base_url", ""):
        return str(
            storage.url(
                key,
                parameters={
                    "ResponseContentDisposition": f'attachment; filename="{download_name}"'
                },
            )
        )
    return str(storage.url(key))


def iter_keys(*, backend: str) -> Iterator[str]:
    """Every image and thumbnail key the backend holds under our prefixes."""
    storage = image_storage(backend)
    for prefix in (IMAGE_PREFIX, THUMBNAIL_PREFIX):
        try:
            _dirs, files = storage.listdir(prefix)
        except FileNotFoundError:
            continue
        for name in files:
            yield f"{prefix}/{name}"


def check_storage() -> str:
    """'ok' when the active storage answers, else a short error word (no secrets)."""
    try:
        image_storage().exists("healthz-probe")
    except Exception as exc:
        logger.warning("storage health check failed: %s", _describe(exc))
        return "unavailable"
    return "ok"


def _is_not_found(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
