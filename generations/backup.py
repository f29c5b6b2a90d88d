"""Backups: export every row (and, in a ZIP, every stored image) and import them again.

The export is the JSON every version has written and read (`version`, `exportedAt`,
`prompts`, `models`, `generations` with their `results` nested), with every field needed to
restore each row under its id. The ZIP adds `manifest.json` (key -> SHA-256 and
size) and the objects under `images/<key>`; it is written as a stream (the HTTP
export and the command share `iter_export_zip`), never built in memory.

Importing reads a bundle as it would read a stranger's: the JSON's size is
bounded before it is parsed, every URL it carries must be one we would link, and
every image must pass the checks a fetched image passes (its size under
IMAGE_FETCH_MAX_BYTES from the ZIP's header and again while it inflates, and the
storing worker's own image inspection). The objects are written first, the rows
then in one transaction; a bundle with one bad byte, an entry name that is not
ours, an unsafe URL or rows that do not fit is refused whole, and the objects
already written are deleted, so nothing is left half-imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management.color import no_style
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from storage_backends import images as image_storage
from storage_backends.images import StorageUnavailable

from .checks import UnsafeUrl, checked_external_url, is_safe_external_url, parse_id
from .imaging import ImageRefused, inspect_and_thumbnail
from .models import Generation, GenerationResult, ImageModel, Prompt

logger = logging.getLogger(__name__)

EXPORT_VERSION = 1
EXPORT_NAME = "export.json"
MANIFEST_NAME = "manifest.json"
IMAGES_DIR = "images/"
# The models the data migration creates: matched by upstream id on import.
SEEDED_UPSTREAM_IDS = {
    "doubao-seedream-4-0-250828",
    "doubao-seedream-3-0-t2i-250415",
    "doubao-seededit-3-0-i2i-250628",
}
_IMAGE_KEY_RE = re.compile(r"^generations/(\d+)\.(jpg|png|webp)$")
_THUMB_KEY_RE = re.compile(r"^thumbnails/(\d+)\.webp$")
_CHUNK = 1024 * 1024
# export.json (or a plain JSON export) is parsed whole, so its size is bounded first:
# 512 MiB holds some 400,000 results, and parsing it takes a few GB of memory.
MAX_JSON_BYTES = 512 * 1024 * 1024
_CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# What reading a damaged or hostile ZIP may raise, besides our own refusals.
_ZIP_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,  # a compression method zipfile does not know
    RuntimeError,  # an encrypted entry
)

S = GenerationResult.StorageStatus
Progress = Callable[[int], object]


class BundleRefused(Exception):
    """The bundle cannot be imported; nothing was written."""


# --- export ------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _prompt_json(prompt: Prompt) -> dict[str, Any]:
    return {
        "id": prompt.pk,
        "text": prompt.text,
        "title": prompt.title,
        "createdAt": _iso(prompt.created_at),
        "updatedAt": _iso(prompt.updated_at),
    }


def _model_json(model: ImageModel) -> dict[str, Any]:
    return {
        "id": model.pk,
        "name": model.name,
        "provider": model.provider,
        "upstreamModelId": model.upstream_model_id,
        "defaultParams": model.default_params,
        "enabled": model.enabled,
        "createdAt": _iso(model.created_at),
    }


def _kept_url(url: str, what: str, problems: list[str]) -> str:
    """A URL as exported: one that import would refuse (a row older than the check) is left out.

    Such a URL was never linked nor fetched; keeping it would make our own backup one
    that `import_backup` refuses whole.
    """
    if not url or url.startswith("data:image/") or is_safe_external_url(url):
        return url
    problems.append(f"{what}: an image URL that is not https, left out")
    return ""


def _generation_json(generation: Generation, problems: list[str]) -> dict[str, Any]:
    reference = _kept_url(
        generation.reference_image_url, f"generation {generation.pk}'s reference", problems
    )
    return {
        "id": generation.pk,
        "promptId": generation.prompt_id,
        "prompt": generation.prompt_text,
        "size": generation.size,
        "params": generation.params,
        "referenceImageUrl": reference,
        "referenceResultId": generation.reference_result_id,
        "createdBy": generation.created_by.get_username() if generation.created_by else None,
        "createdAt": _iso(generation.created_at),
        "results": [],
    }


def _result_json(result: GenerationResult, problems: list[str]) -> dict[str, Any]:
    external = _kept_url(result.external_url, f"result {result.pk}", problems)
    params_used = result.params_used
    params_url = params_used.get("externalImageUrl") if isinstance(params_used, dict) else None
    if params_url and not is_safe_external_url(params_url):
        params_used = {k: v for k, v in params_used.items() if k != "externalImageUrl"}
    return {
        "id": result.pk,
        "modelId": result.model_id,
        "model": result.upstream_model_id,
        "imageIndex": result.image_index,
        "status": result.status,
        "errorCode": result.error_code,
        "errorMessage": result.error_message,
        "imageUrl": external if result.image_url == result.external_url else result.image_url,
        "externalImageUrl": external,
        "externalImageUrlExpiresAt": _iso(result.external_url_expires_at),
        "paramsUsed": params_used,
        "paramsOverride": result.params_override,
        "storageStatus": result.storage_status,
        "storageBackend": result.storage_backend,
        "storageKey": result.storage_key,
        "thumbnailKey": result.thumbnail_key,
        "contentType": result.content_type,
        "byteSize": result.byte_size,
        "sha256": result.sha256,
        "width": result.width,
        "height": result.height,
        "storageAttempts": result.storage_attempts,
        "storageError": result.storage_error,
        "storedAt": _iso(result.stored_at),
        "createdAt": _iso(result.created_at),
    }


def export_data(*, problems: list[str] | None = None) -> dict[str, Any]:
    """Every prompt, model, generation and result, as the export JSON (a dict).

    What was left out (URLs import would refuse) is appended to `problems`.
    """
    problems = problems if problems is not None else []
    generations: dict[int, dict[str, Any]] = {}
    for generation in (
        Generation.objects.select_related("created_by").order_by("pk").iterator(chunk_size=2000)
    ):
        generations[generation.pk] = _generation_json(generation, problems)
    for result in GenerationResult.objects.order_by("generation_id", "pk").iterator(
        chunk_size=2000
    ):
        generations[result.generation_id]["results"].append(_result_json(result, problems))
    return {
        "version": EXPORT_VERSION,
        "exportedAt": timezone.now().isoformat(),
        "prompts": [
            _prompt_json(p) for p in Prompt.objects.order_by("pk").iterator(chunk_size=2000)
        ],
        "models": [_model_json(m) for m in ImageModel.objects.order_by("pk")],
        "generations": list(generations.values()),
    }


def _unstore_in_export(result: dict[str, Any], reason: str) -> None:
    """A result whose bytes are not in the bundle is exported as not stored (re-store later)."""
    result.update(
        storageStatus=S.PENDING.value,
        storageBackend="",
        storageKey="",
        thumbnailKey="",
        contentType="",
        byteSize=None,
        sha256="",
        width=None,
        height=None,
        storedAt=None,
        storageError=reason,
        imageUrl=result["externalImageUrl"],
    )


class _StreamSink:
    """A write-only file for zipfile: it buffers what was written until drained."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


@dataclass
class ExportReport:
    images: int = 0
    thumbnails: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


def iter_export_zip(
    *, data: dict[str, Any] | None = None, report: ExportReport | None = None
) -> Iterator[bytes]:
    """The export ZIP as a stream of byte chunks: images first, then manifest and JSON.

    The JSON is written last so that an object that vanished or no longer matches its
    row while the export ran is recorded as not stored, and the bundle stays
    consistent: every stored row in it has its bytes in it.
    """
    report = report if report is not None else ExportReport()
    data = data if data is not None else export_data(problems=report.problems)
    manifest: dict[str, dict[str, Any]] = {}
    sink = _StreamSink()
    with zipfile.ZipFile(
        sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True
    ) as archive:
        for generation in data["generations"]:
            for result in generation["results"]:
                if result["storageStatus"] != S.STORED:
                    continue
                backend = result["storageBackend"]
                entries = [(result["storageKey"], result["sha256"])]
                if result["thumbnailKey"]:
                    entries.append((result["thumbnailKey"], None))
                for key, expected_sha256 in entries:
                    outcome: dict[str, Any] = {}
                    yield from _write_object(
                        archive, sink, backend=backend, key=key, outcome=outcome
                    )
                    problem = outcome.get("problem")
                    if (
                        not problem
                        and expected_sha256 is not None
                        and (
                            outcome["sha256"] != expected_sha256
                            or outcome["size"] != result["byteSize"]
                        )
                    ):
                        problem = "does not match its row's SHA-256 and size"
                    if problem:
                        report.problems.append(f"result {result['id']}: {backend}:{key} {problem}")
                        if expected_sha256 is None:
                            result["thumbnailKey"] = ""
                            continue
                        _unstore_in_export(result, f"not in the backup: the object {problem}")
                        break
                    manifest[key] = {"sha256": outcome["sha256"], "size": outcome["size"]}
                    report.bytes += outcome["size"]
                    if expected_sha256 is None:
                        report.thumbnails += 1
                    else:
                        report.images += 1
        manifest_json = {"version": EXPORT_VERSION, "images": manifest}
        yield from _write_json(archive, sink, MANIFEST_NAME, manifest_json)
        yield from _write_json(archive, sink, EXPORT_NAME, data)
    yield sink.drain()


def _zip_info(name: str, compress_type: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=timezone.now().timetuple()[:6])
    info.compress_type = compress_type
    info.external_attr = 0o644 << 16
    return info


def _write_object(
    archive: zipfile.ZipFile, sink: _StreamSink, *, backend: str, key: str, outcome: dict[str, Any]
) -> Iterator[bytes]:
    try:
        chunks = image_storage.iter_object_chunks(backend=backend, key=key, chunk_size=_CHUNK)
        first = next(chunks, b"")  # a missing object fails here, before its entry is opened
    except FileNotFoundError:
        outcome["problem"] = "is missing"
        return
    except (StorageUnavailable, ImproperlyConfigured) as exc:
        outcome["problem"] = f"could not be read ({exc})"
        return
    digest = hashlib.sha256()
    size = 0
    with archive.open(_zip_info(IMAGES_DIR + key, zipfile.ZIP_STORED), mode="w") as entry:
        try:
            for chunk in _prepend(first, chunks):
                entry.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                yield sink.drain()
        except StorageUnavailable as exc:
            # The partial entry stays in the archive but not in the manifest: import ignores it.
            outcome["problem"] = f"could not be read ({exc})"
    outcome.setdefault("sha256", digest.hexdigest())
    outcome.setdefault("size", size)
    yield sink.drain()


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _write_json(
    archive: zipfile.ZipFile, sink: _StreamSink, name: str, payload: Any
) -> Iterator[bytes]:
    with archive.open(_zip_info(name, zipfile.ZIP_DEFLATED), mode="w") as entry:
        buffer: list[str] = []
        buffered = 0
        for piece in json.JSONEncoder(ensure_ascii=False).iterencode(payload):
            buffer.append(piece)
            buffered += len(piece)
            if buffered >= _CHUNK:
                entry.write("".join(buffer).encode())
                buffer.clear()
                buffered = 0
                yield sink.drain()
        entry.write("".join(buffer).encode())
    yield sink.drain()


def write_export_file(*, path: Path, images: bool) -> ExportReport:
    """Write the export to `path` (ZIP with images, else JSON) through a temporary file."""
    report = ExportReport()
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with tmp.open("wb") as out:
            if images:
                for chunk in iter_export_zip(report=report):
                    out.write(chunk)
            else:
                data = export_data(problems=report.problems)
                out.write(json.dumps(data, ensure_ascii=False).encode())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return report


# --- import ------------------------------------------------------------------------


@dataclass
class ImportReport:
    prompts: int = 0
    models_created: int = 0
    models_matched: int = 0
    generations: int = 0
    results: int = 0
    images: int = 0
    thumbnails: int = 0
    unstored: int = 0  # JSON import: stored rows whose object is not in storage
    skipped: int = 0  # --merge: rows whose id already exists

    def summary(self) -> str:
        line = (
            f"prompts {self.prompts}, models {self.models_created} created / "
            f"{self.models_matched} matched, "
            f"generations {self.generations}, results {self.results}, images {self.images}, "
            f"thumbnails {self.thumbnails}"
        )
        if self.unstored:
            line += f", {self.unstored} marked for re-store (object not found)"
        if self.skipped:
            line += f", skipped {self.skipped} existing rows"
        return line


def database_is_empty() -> bool:
    return not (
        Prompt.objects.exists() or Generation.objects.exists() or GenerationResult.objects.exists()
    )


def _show(value: object) -> str:
    """A value from the bundle in a refusal: quoted, and short enough for one line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_entry_name(name: str) -> None:
    if (
        name.startswith(("/", "\\"))
        or "\\" in name
        or ".." in name.split("/")
        or re.match(r"^[A-Za-z]:", name)
        or "\0" in name
    ):
        raise BundleRefused(f"refused: the archive holds an unsafe entry name {_show(name)}")
    if name in (EXPORT_NAME, MANIFEST_NAME):
        return
    if name.startswith(IMAGES_DIR):
        key = name[len(IMAGES_DIR) :]
        if _IMAGE_KEY_RE.match(key) or _THUMB_KEY_RE.match(key):
            return
    raise BundleRefused(f"refused: the archive holds an entry that is not ours: {_show(name)}")


def _parse_json(raw: bytes, name: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise BundleRefused(f"refused: {name} is nested too deeply to be an export") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BundleRefused(f"refused: {name} is not valid JSON ({exc})") from None


def _read_json_entry(archive: zipfile.ZipFile, name: str) -> Any:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise BundleRefused(f"refused: the archive has no {name}") from None
    if info.file_size > MAX_JSON_BYTES:
        raise BundleRefused(f"refused: {name} is larger than {MAX_JSON_BYTES} bytes")
    try:
        with archive.open(info) as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)  # a header may lie: the read is bounded too
    except _ZIP_READ_ERRORS as exc:
        raise BundleRefused(f"refused: {name} cannot be read from the archive ({exc})") from None
    if len(raw) > MAX_JSON_BYTES:
        raise BundleRefused(f"refused: {name} is larger than {MAX_JSON_BYTES} bytes")
    return _parse_json(raw, name)


def _checked_manifest(manifest: Any) -> dict[str, dict[str, Any]]:
    images = manifest.get("images") if isinstance(manifest, dict) else None
    if not isinstance(images, dict):
        raise BundleRefused("refused: manifest.json has no 'images' object")
    for key, entry in images.items():
        if not (
            isinstance(entry, dict)
            and _is_count(entry.get("size"))
            and isinstance(entry.get("sha256"), str)
        ):
            raise BundleRefused(f"refused: manifest.json has a malformed entry for {_show(key)}")
    return images


@dataclass
class _Bundle:
    data: dict[str, Any]
    archive: zipfile.ZipFile | None = None
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)


def _open_bundle(path: Path) -> _Bundle:
    if not path.is_file():
        raise BundleRefused(f"no such file: {path}")
    if zipfile.is_zipfile(path):
        try:
            archive = zipfile.ZipFile(path)
        except _ZIP_READ_ERRORS as exc:
            raise BundleRefused(f"refused: {path} is not a readable ZIP ({exc})") from None
        try:
            names = [info.filename for info in archive.infolist()]
            for name in names:
                _check_entry_name(name)
            if len(set(names)) != len(names):
                raise BundleRefused("refused: the archive holds the same entry twice")
            manifest = _checked_manifest(_read_json_entry(archive, MANIFEST_NAME))
            return _Bundle(
                data=_read_json_entry(archive, EXPORT_NAME), archive=archive, manifest=manifest
            )
        except BaseException:
            archive.close()
            raise
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise BundleRefused(
            f"refused: {path} is neither a ZIP nor a JSON export of at most {MAX_JSON_BYTES} bytes"
        )
    with path.open("rb") as fh:
        raw = fh.read(MAX_JSON_BYTES + 1)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BundleRefused(f"refused: {path} is nested too deeply to be an export") from None
    except ValueError as exc:
        raise BundleRefused(f"refused: {path} is neither a ZIP nor valid JSON ({exc})") from None
    return _Bundle(data=data)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and parse_id(value) is not None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_url(url: object, what: str) -> None:
    try:
        checked_external_url(url)
    except UnsafeUrl as exc:
        raise BundleRefused(f"refused: {what} is not a URL we keep: {exc}") from None


def _check_result(result: dict[str, Any]) -> None:
    """The URLs a result carries, and the keys and type a stored one names."""
    result_id = result["id"]
    external = result.get("externalImageUrl") or ""
    if external:
        _check_url(external, f"result {result_id}'s externalImageUrl")
    params = result.get("paramsUsed")
    if isinstance(params, dict) and params.get("externalImageUrl"):
        _check_url(params["externalImageUrl"], f"result {result_id}'s paramsUsed.externalImageUrl")
    if result.get("storageStatus") != S.STORED:
        # Not stored: its imageUrl is its external URL (a stored one gets its stable URL).
        if (result.get("imageUrl") or "") not in ("", external):
            raise BundleRefused(f"refused: result {result_id}'s imageUrl is not its external URL")
        return
    match = _IMAGE_KEY_RE.match(str(result.get("storageKey", "")))
    if not match or int(match[1]) != result_id:
        raise BundleRefused(
            f"refused: result {result_id} has a storage key not made from its id: "
            f"{_show(result.get('storageKey'))}"
        )
    thumb = result.get("thumbnailKey") or ""
    if thumb and thumb != image_storage.thumbnail_key(result_id=result_id):
        raise BundleRefused(
            f"refused: result {result_id} has a foreign thumbnail key {_show(thumb)}"
        )
    if result.get("contentType") != _CONTENT_TYPES[match[2]]:
        raise BundleRefused(
            f"refused: result {result_id} is stored as {_show(result.get('contentType'))} "
            f"under {match[0]}"
        )
    if not _is_count(result.get("byteSize")):
        raise BundleRefused(f"refused: result {result_id} is stored without a byte size")


def _check_export(data: Any) -> None:
    """Refuse an export whose shape, URLs or keys we would not have written ourselves."""
    if not isinstance(data, dict) or data.get("version") != EXPORT_VERSION:
        raise BundleRefused(f"refused: not a genvault export of version {EXPORT_VERSION}")
    for name in ("prompts", "models", "generations"):
        items = data.get(name)
        if not isinstance(items, list):
            raise BundleRefused(f"refused: the export has no '{name}' list")
        for item in items:
            if not isinstance(item, dict) or not _is_id(item.get("id")):
                raise BundleRefused(f"refused: the export's '{name}' holds an item with no id")
    for generation in data["generations"]:
        generation_id = generation["id"]
        if not isinstance(generation.get("prompt"), str):
            raise BundleRefused(f"refused: generation {generation_id} has no prompt")
        reference = generation.get("referenceImageUrl") or ""
        if reference and not (isinstance(reference, str) and reference.startswith("data:image/")):
            _check_url(reference, f"generation {generation_id}'s referenceImageUrl")
        results = generation.setdefault("results", [])
        if not isinstance(results, list):
            raise BundleRefused(f"refused: generation {generation_id}'s results are not a list")
        for result in results:
            if not isinstance(result, dict) or not _is_id(result.get("id")):
                raise BundleRefused(
                    f"refused: generation {generation_id} holds a result with no id"
                )
            _check_result(result)


def _chunked(values: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _check_merge(data: dict[str, Any]) -> None:
    """A merge adds rows beside ours and skips the ones we hold: never under another's name.

    A generation id we hold with another prompt, or a result id we hold under another
    generation, means the bundle comes from another database whose ids collide with
    ours; skipping or attaching would file its results under a stranger's generation.
    """
    prompts = {g["id"]: g["prompt"] for g in data["generations"]}
    for chunk in _chunked(list(prompts)):
        for pk, text in Generation.objects.filter(pk__in=chunk).values_list("pk", "prompt_text"):
            if text != prompts[pk]:
                raise BundleRefused(
                    f"refused: generation {pk} exists here with a different prompt "
                    "(a merge never files results under another generation)"
                )
    owners = {r["id"]: g["id"] for g in data["generations"] for r in g["results"]}
    for chunk in _chunked(list(owners)):
        for pk, generation_id in GenerationResult.objects.filter(pk__in=chunk).values_list(
            "pk", "generation_id"
        ):
            if generation_id != owners[pk]:
                raise BundleRefused(
                    f"refused: result {pk} exists here under generation {generation_id}, "
                    f"not under generation {owners[pk]} as in the bundle"
                )


def _dt(value: Any) -> datetime | None:
    return parse_datetime(value) if value else None


class _ObjectWriter:
    """Writes objects to the active backend and remembers them, to delete on failure."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.written: list[str] = []

    def save(self, *, key: str, path: Path) -> None:
        self.written.append(key)
        image_storage.save_object_from_path(backend=self.backend, key=key, path=path)

    def save_bytes(self, *, key: str, data: bytes) -> None:
        self.written.append(key)
        image_storage.save_object_bytes(backend=self.backend, key=key, data=data)

    def undo(self) -> None:
        image_storage.delete_objects(backend=self.backend, keys=self.written)
        self.written = []


def _extract_verified(
    archive: zipfile.ZipFile, *, key: str, expected: dict[str, Any], dest: Path
) -> None:
    """Copy one entry to `dest`, refusing it unless its bytes match the manifest.

    The size is checked from the entry's header before anything is read, and again
    while copying: a ZIP's header can lie, and a small entry can inflate to gigabytes.
    """
    name = IMAGES_DIR + key
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise BundleRefused(f"refused: {key} is in the manifest but not in the archive") from None
    size_limit = int(expected["size"])
    if info.file_size != size_limit:
        raise BundleRefused(
            f"refused: {key} declares {info.file_size} bytes, its manifest says {size_limit}"
        )
    digest = hashlib.sha256()
    size = 0
    try:
        with archive.open(info) as entry, dest.open("wb") as out:
            while chunk := entry.read(_CHUNK):
                size += len(chunk)
                if size > size_limit:
                    raise BundleRefused(f"refused: {key} is larger than its manifest says")
                digest.update(chunk)
                out.write(chunk)
    except _ZIP_READ_ERRORS as exc:
        raise BundleRefused(f"refused: {key} cannot be read from the archive ({exc})") from None
    if size != size_limit or digest.hexdigest() != expected["sha256"]:
        raise BundleRefused(f"refused: {key} does not match its SHA-256 in the manifest")


def backup_import(
    *, path: Path, merge: bool = False, progress: Progress | None = None
) -> ImportReport:
    """Restore an export (JSON or ZIP) with every row's id and every image byte for byte.

    Refuses a non-empty database unless `merge` (then rows whose id exists are
    skipped, and a bundle whose ids collide with other rows of ours is refused).
    Objects are written to the active backend first, each checked against the
    manifest, its row and the image checks a fetched image passes; then all rows in
    one transaction. On any failure the objects written are deleted and
    BundleRefused says why.
    """
    bundle = _open_bundle(path)
    try:
        _check_export(bundle.data)
        if not merge and not database_is_empty():
            raise BundleRefused(
                "refused: the database already holds prompts, generations or results "
                "(import into an empty database, or pass --merge)"
            )
        if merge:
            _check_merge(bundle.data)
        report = ImportReport()
        existing_results = (
            set(GenerationResult.objects.values_list("pk", flat=True)) if merge else set()
        )
        results = [
            result
            for generation in bundle.data["generations"]
            for result in generation["results"]
            if result["id"] not in existing_results
        ]
        writer = _ObjectWriter(image_storage.active_backend())
        try:
            if bundle.archive is not None:
                _import_objects(bundle, results, writer, report, progress)
            else:
                _check_objects_in_place(results, report, progress)
            _import_rows(
                bundle.data, merge=merge, report=report, zip_import=bundle.archive is not None
            )
        except BaseException:
            writer.undo()
            raise
        return report
    finally:
        if bundle.archive is not None:
            bundle.archive.close()


def _import_objects(
    bundle: _Bundle,
    results: list[dict[str, Any]],
    writer: _ObjectWriter,
    report: ImportReport,
    progress: Progress | None,
) -> None:
    """Write each stored result's image, checked as the storing worker checks a fetched one.

    The thumbnail is rendered again from the checked image, as the worker renders
    it; the bundle's own thumbnail bytes are never trusted. The row records what
    the bytes are (type and pixel size), not what the bundle says.
    """
    assert bundle.archive is not None
    max_bytes = settings.IMAGE_FETCH_MAX_BYTES
    with tempfile.TemporaryDirectory(prefix="genvault-import-") as tmp_name:
        image_path = Path(tmp_name) / "image"
        for result in results:
            if result.get("storageStatus") != S.STORED:
                continue
            result_id = result["id"]
            key = result["storageKey"]
            expected = bundle.manifest.get(key)
            if expected is None:
                raise BundleRefused(
                    f"refused: result {result_id} is stored but {key} is not in the bundle"
                )
            if expected["sha256"] != result.get("sha256") or expected["size"] != result.get(
                "byteSize"
            ):
                raise BundleRefused(
                    f"refused: {key}: the manifest and the row disagree on its SHA-256 or size"
                )
            if expected["size"] > max_bytes:
                raise BundleRefused(
                    f"refused: {key} is {expected['size']} bytes, over the limit of "
                    f"{max_bytes} (IMAGE_FETCH_MAX_BYTES)"
                )
            _extract_verified(bundle.archive, key=key, expected=expected, dest=image_path)
            try:
                info, thumbnail = inspect_and_thumbnail(
                    image_path, max_pixels=settings.IMAGE_FETCH_MAX_PIXELS
                )
            except ImageRefused as exc:
                raise BundleRefused(
                    f"refused: result {result_id}: {key} is not an image we store ({exc})"
                ) from None
            if key != image_storage.image_key(result_id=result_id, extension=info.extension):
                raise BundleRefused(
                    f"refused: result {result_id}: {key} holds {info.content_type} bytes, "
                    "not what its extension says"
                )
            thumb = image_storage.thumbnail_key(result_id=result_id)
            result.update(
                contentType=info.content_type,
                width=info.width,
                height=info.height,
                thumbnailKey=thumb,
            )
            try:
                writer.save(key=key, path=image_path)
                writer.save_bytes(key=thumb, data=thumbnail)
            except StorageUnavailable as exc:
                raise BundleRefused(f"refused: could not write to storage: {exc}") from None
            report.images += 1
            report.thumbnails += 1
            if progress:
                progress(1)


def _check_objects_in_place(
    results: list[dict[str, Any]], report: ImportReport, progress: Progress | None
) -> None:
    """A JSON-only import keeps a stored row only when its object is still where it says."""
    for result in results:
        if result.get("storageStatus") != S.STORED:
            continue
        try:
            size = image_storage.object_size(
                backend=result["storageBackend"], key=result["storageKey"]
            )
        except (FileNotFoundError, StorageUnavailable, ImproperlyConfigured):
            size = -1
        if size != result.get("byteSize"):
            _unstore_in_export(result, "not found in storage when the backup was imported")
            report.unstored += 1
        if progress:
            progress(1)


def _import_rows(
    data: dict[str, Any], *, merge: bool, report: ImportReport, zip_import: bool
) -> None:
    backend = image_storage.active_backend()
    users = {u.get_username(): u.pk for u in get_user_model().objects.all()}
    try:
        with transaction.atomic():
            model_ids = _import_models(data["models"], report)
            _import_prompts(data["prompts"], merge=merge, report=report)
            references = _import_generations(
                data["generations"], users=users, merge=merge, report=report
            )
            _import_results(
                data["generations"],
                model_ids=model_ids,
                backend=backend,
                zip_import=zip_import,
                report=report,
            )
            # Only a result the bundle carries: on a merge, an id of ours is someone else's.
            bundled = {r["id"] for g in data["generations"] for r in g["results"]}
            for generation_id, result_id in references:
                if result_id in bundled and GenerationResult.objects.filter(pk=result_id).exists():
                    Generation.objects.filter(pk=generation_id).update(
                        reference_result_id=result_id
                    )
    except (DatabaseError, KeyError, TypeError, ValueError) as exc:
        raise BundleRefused(
            f"refused: the rows could not be written ({type(exc).__name__}: {exc})"
        ) from None
    if connection.vendor == "postgresql":
        # Rows came with their ids: move the sequences past them for new rows.
        statements = connection.ops.sequence_reset_sql(
            no_style(), [Prompt, ImageModel, Generation, GenerationResult]
        )
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


def _import_models(models: list[dict[str, Any]], report: ImportReport) -> dict[int, int]:
    model_ids: dict[int, int] = {}
    for item in models:
        upstream = item["upstreamModelId"]
        match = ImageModel.objects.filter(name=item["name"], upstream_model_id=upstream).first()
        if match is None and upstream in SEEDED_UPSTREAM_IDS:
            match = ImageModel.objects.filter(upstream_model_id=upstream).order_by("pk").first()
        if match is not None:
            model_ids[item["id"]] = match.pk
            report.models_matched += 1
            continue
        name = item["name"]
        if ImageModel.objects.filter(name=name).exists():
            name = f"{name} (imported {item['id']})"
        model = ImageModel(
            name=name,
            provider=item["provider"],
            upstream_model_id=upstream,
            default_params=item.get("defaultParams") or {},
            enabled=item.get("enabled", True),
        )
        if not ImageModel.objects.filter(pk=item["id"]).exists():
            model.pk = item["id"]
        model.save(force_insert=True)
        if item.get("createdAt"):
            ImageModel.objects.filter(pk=model.pk).update(created_at=_dt(item["createdAt"]))
        model_ids[item["id"]] = model.pk
        report.models_created += 1
    return model_ids


def _import_prompts(prompts: list[dict[str, Any]], *, merge: bool, report: ImportReport) -> None:
    existing = set(Prompt.objects.values_list("pk", flat=True)) if merge else set()
    rows = [
        Prompt(pk=p["id"], text=p["text"], title=p.get("title") or "")
        for p in prompts
        if p["id"] not in existing
    ]
    report.skipped += len(prompts) - len(rows)
    Prompt.objects.bulk_create(rows, batch_size=1000)
    # auto_now_add/auto_now overwrite times on insert: put the exported ones back.
    for item in prompts:
        if item["id"] not in existing:
            Prompt.objects.filter(pk=item["id"]).update(
                created_at=_dt(item.get("createdAt")) or timezone.now(),
                updated_at=_dt(item.get("updatedAt")) or timezone.now(),
            )
    report.prompts += len(rows)


def _import_generations(
    generations: list[dict[str, Any]], *, users: dict[str, int], merge: bool, report: ImportReport
) -> list[tuple[int, int]]:
    existing = set(Generation.objects.values_list("pk", flat=True)) if merge else set()
    prompt_ids = set(Prompt.objects.values_list("pk", flat=True))
    rows = []
    references = []
    for item in generations:
        if item["id"] in existing:
            report.skipped += 1
            continue
        rows.append(
            Generation(
                pk=item["id"],
                prompt_id=item.get("promptId") if item.get("promptId") in prompt_ids else None,
                prompt_text=item["prompt"],
                size=item.get("size") or "",
                params=item.get("params") or {},
                reference_image_url=item.get("referenceImageUrl") or "",
                created_by_id=users.get(item.get("createdBy") or ""),
                created_at=_dt(item.get("createdAt")) or timezone.now(),
            )
        )
        if item.get("referenceResultId"):
            references.append((item["id"], item["referenceResultId"]))
    Generation.objects.bulk_create(rows, batch_size=1000)
    report.generations += len(rows)
    return references


def _import_results(
    generations: list[dict[str, Any]],
    *,
    model_ids: dict[int, int],
    backend: str,
    zip_import: bool,
    report: ImportReport,
) -> None:
    existing = set(GenerationResult.objects.values_list("pk", flat=True))
    rows = []
    for generation in generations:
        for item in generation.get("results", []):
            if item["id"] in existing:
                report.skipped += 1
                continue
            storage_status = item.get("storageStatus") or ""
            if storage_status == S.STORING:
                storage_status = S.PENDING  # the claim died with the old database
            stored = storage_status == S.STORED
            row = GenerationResult(
                pk=item["id"],
                generation_id=generation["id"],
                model_id=model_ids.get(item["modelId"])
                if item.get("modelId") is not None
                else None,
                upstream_model_id=item["model"],
                image_index=item.get("imageIndex") or 0,
                status=item["status"],
                error_code=item.get("errorCode") or "",
                error_message=item.get("errorMessage") or "",
                image_url=item.get("imageUrl") or "",
                external_url=item.get("externalImageUrl") or "",
                external_url_expires_at=_dt(item.get("externalImageUrlExpiresAt")),
                params_used=item.get("paramsUsed") or {},
                params_override=item.get("paramsOverride") or {},
                storage_status=storage_status,
                storage_backend=(backend if zip_import else item.get("storageBackend") or "")
                if stored
                else "",
                storage_key=(item.get("storageKey") or "") if stored else "",
                thumbnail_key=(item.get("thumbnailKey") or "") if stored else "",
                content_type=item.get("contentType") or "",
                byte_size=item.get("byteSize"),
                sha256=item.get("sha256") or "",
                width=item.get("width"),
                height=item.get("height"),
                storage_attempts=item.get("storageAttempts") or 0,
                storage_error=item.get("storageError") or "",
                stored_at=_dt(item.get("storedAt")),
                created_at=_dt(item.get("createdAt")) or timezone.now(),
            )
            if stored:
                row.image_url = row.stable_url
            rows.append(row)
    GenerationResult.objects.bulk_create(rows, batch_size=1000)
    report.results += len(rows)
