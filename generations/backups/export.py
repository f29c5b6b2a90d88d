"""Writing a backup: every row as the export JSON, or a ZIP with every stored image too.

The ZIP is written as a stream (the HTTP export and the command share
`iter_export_zip`), never built in memory.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from storage_backends import images as image_storage
from storage_backends.images import StorageUnavailable

from ..checks import is_safe_external_url
from ..models import Generation, GenerationResult, ImageModel, Prompt, ResultTag, Share, Tag
from .bundle import (
    CHUNK_SIZE,
    EXPORT_NAME,
    EXPORT_VERSION,
    IMAGES_DIR,
    MANIFEST_NAME,
    RESULT_COLUMN_KEYS,
    iso,
    mark_not_stored,
)

S = GenerationResult.StorageStatus


def _prompt_json(prompt: Prompt) -> dict[str, Any]:
    return {
        "id": prompt.pk,
        "text": prompt.text,
        "title": prompt.title,
        "createdAt": iso(prompt.created_at),
        "updatedAt": iso(prompt.updated_at),
    }


def _model_json(model: ImageModel) -> dict[str, Any]:
    return {
        "id": model.pk,
        "name": model.name,
        "provider": model.provider,
        "upstreamModelId": model.upstream_model_id,
        "defaultParams": model.default_params,
        "enabled": model.enabled,
        "createdAt": iso(model.created_at),
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
        "createdAt": iso(generation.created_at),
        "results": [],
    }


def _tag_json(tag: Tag) -> dict[str, Any]:
    return {"id": tag.pk, "name": tag.name, "createdAt": iso(tag.created_at)}


def _share_json(share: Share, result_ids: list[int]) -> dict[str, Any]:
    return {
        "id": share.pk,
        "key": share.key,  # with the same SECRET_KEY, a restored share's link still opens
        "kind": share.kind,
        "tag": share.tag_name,
        "resultIds": sorted(result_ids),
        "createdBy": share.created_by.get_username() if share.created_by else None,
        "createdAt": iso(share.created_at),
        "expiresAt": iso(share.expires_at),
        "revokedAt": iso(share.revoked_at),
        "revokedBy": share.revoked_by.get_username() if share.revoked_by else None,
    }


def _shares_json() -> list[dict[str, Any]]:
    links: dict[int, list[int]] = {}
    for share_id, result_id in Share.results.through.objects.values_list(
        "share_id", "generationresult_id"
    ).iterator(chunk_size=2000):
        links.setdefault(share_id, []).append(result_id)
    shares = Share.objects.select_related("created_by", "revoked_by").order_by("pk")
    return [_share_json(share, links.get(share.pk, [])) for share in shares]


def _result_json(result: GenerationResult, problems: list[str]) -> dict[str, Any]:
    external = _kept_url(result.external_url, f"result {result.pk}", problems)
    data: dict[str, Any] = {
        "id": result.pk,
        "modelId": result.model_id,
        "model": result.upstream_model_id,
        "imageUrl": external if result.image_url == result.external_url else result.image_url,
        "externalImageUrl": external,
        "paramsUsed": result.params_used_json(external_url=external),
        # Kept for readers of older bundles: no version of genvault ever filled it.
        "paramsOverride": {},
        "favorite": result.favorite,
        "tags": [],  # filled in by export_data, from the tags' links
    }
    for column, key in RESULT_COLUMN_KEYS.items():
        value = getattr(result, column)
        data[key] = iso(value) if isinstance(value, datetime) else value
    return data


def export_data(*, problems: list[str] | None = None) -> dict[str, Any]:
    """Every prompt, model, generation and result (with its star and tags), every tag and
    every share link, as the export JSON (a dict).

    What was left out (URLs import would refuse) is appended to `problems`.
    """
    problems = problems if problems is not None else []
    tags = {tag.pk: tag for tag in Tag.objects.order_by("key")}
    tags_of: dict[int, list[str]] = {}
    for result_id, tag_id in (
        ResultTag.objects.order_by("result_id", "tag__key")
        .values_list("result_id", "tag_id")
        .iterator(chunk_size=2000)
    ):
        if tag_id in tags:  # not: a tag made while the export ran
            tags_of.setdefault(result_id, []).append(tags[tag_id].name)
    generations: dict[int, dict[str, Any]] = {}
    for generation in (
        Generation.objects.select_related("created_by").order_by("pk").iterator(chunk_size=2000)
    ):
        generations[generation.pk] = _generation_json(generation, problems)
    for result in GenerationResult.objects.order_by("generation_id", "pk").iterator(
        chunk_size=2000
    ):
        owner = generations.get(result.generation_id)
        if owner is not None:  # None: made after the generations were read
            data = _result_json(result, problems)
            data["tags"] = tags_of.get(result.pk, [])
            owner["results"].append(data)
    return {
        "version": EXPORT_VERSION,
        "exportedAt": timezone.now().isoformat(),
        "prompts": [
            _prompt_json(p) for p in Prompt.objects.order_by("pk").iterator(chunk_size=2000)
        ],
        "models": [_model_json(m) for m in ImageModel.objects.order_by("pk")],
        "generations": list(generations.values()),
        "tags": [_tag_json(tag) for tag in tags.values()],
        "shares": _shares_json(),
    }


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


def iter_export_zip(*, report: ExportReport | None = None) -> Iterator[bytes]:
    """The export ZIP as a stream of byte chunks: images first, then manifest and JSON.

    The JSON is written last so that an object that vanished or no longer matches its
    row while the export ran is recorded as not stored, and the bundle stays
    consistent: every stored row in it has its bytes in it.
    """
    report = report if report is not None else ExportReport()
    data = export_data(problems=report.problems)
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
                        mark_not_stored(result, reason=f"not in the backup: the object {problem}")
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
        chunks = image_storage.iter_object_chunks(backend=backend, key=key, chunk_size=CHUNK_SIZE)
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
            if buffered >= CHUNK_SIZE:
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
