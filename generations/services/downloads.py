"""A ZIP of chosen results, streamed: their stored images under their download names, and a
`metadata.json` saying what each one is.

The archive is never built in memory or on disk: zipstream-ng writes each entry's
header, then the object's bytes as storage hands them over, then the central
directory. Entries are stored uncompressed (images are compressed already), and every
size is known from the rows before the first byte, so the response carries its
`Content-Length`.

Only stored images go in. A selected result without stored bytes (pending, failed,
lost, or a failed generation) is listed under `skipped` in `metadata.json` with the
reason, so the person who asked sees why it is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from zipstream import ZIP_STORED, ZipStream

from generations.api.serve import download_name
from generations.models import GenerationResult
from storage_backends import images as image_storage

METADATA_NAME = "metadata.json"
_CHUNK_SIZE = 1024 * 1024


class TooManyToDownload(Exception):
    """More results than one ZIP takes; nothing was streamed."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"more than {limit} results match: narrow the selection or the filter "
            f"(by date, model or tag) to download at most {limit} at once"
        )
        self.limit = limit


@dataclass(frozen=True)
class ResultsArchive:
    """A ZIP ready to stream: its chunks, its exact size, and what went in."""

    chunks: Iterator[bytes]
    size: int
    filename: str
    included: int
    skipped: int


def download_limit() -> int:
    """The most results one ZIP takes (DOWNLOAD_MAX_RESULTS): enough for any selection made
    by hand and a filter narrowed to a project, and a bound on what one request streams
    (at Seedream's 4K sizes, a few GB)."""
    return int(settings.DOWNLOAD_MAX_RESULTS)


def results_for_download(
    results: QuerySet[GenerationResult], *, limit: int | None = None
) -> list[GenerationResult]:
    """The rows of `results` (in their order) with what the archive reads of them, in two
    queries however many there are; TooManyToDownload past `limit` (DOWNLOAD_MAX_RESULTS
    by default)."""
    limit = download_limit() if limit is None else limit
    rows = list(results.select_related("generation", "model").prefetch_related("tags")[: limit + 1])
    if len(rows) > limit:
        raise TooManyToDownload(limit)
    return rows


def results_archive(*, results: Iterable[GenerationResult]) -> ResultsArchive:
    """The ZIP of these results' stored images and their `metadata.json`.

    Reads no row: give it rows from `results_for_download`. Storage is read only while
    the chunks are consumed, one object at a time; an object that disappeared or whose
    size no longer matches its row breaks the stream off (the client then sees fewer
    bytes than the announced length, never a ZIP that looks whole).
    """
    archive = ZipStream(compress_type=ZIP_STORED, sized=True)
    images: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for result in results:
        if not result.is_stored or result.byte_size is None:
            skipped.append({**_describe(result), "reason": _why_not_stored(result)})
            continue
        name = download_name(result)
        archive.add(
            image_storage.iter_object_chunks(
                backend=result.storage_backend, key=result.storage_key, chunk_size=_CHUNK_SIZE
            ),
            arcname=name,
            size=result.byte_size,
        )
        images.append({"file": name, **_describe(result)})
    metadata = {
        "createdAt": timezone.now().isoformat(),
        "images": images,
        "skipped": skipped,
    }
    archive.add(json.dumps(metadata, ensure_ascii=False, indent=2).encode(), arcname=METADATA_NAME)
    return ResultsArchive(
        chunks=iter(archive),
        size=len(archive),
        filename=f"genvault-{timezone.now():%Y%m%d-%H%M%S}.zip",
        included=len(images),
        skipped=len(skipped),
    )


def _describe(result: GenerationResult) -> dict[str, Any]:
    params = result.params_sent()
    stored = result.is_stored
    return {
        "id": result.pk,
        "prompt": result.generation.prompt_text,
        "model": result.upstream_model_id,
        "modelName": result.model.name if result.model else None,
        "size": f"{result.width}x{result.height}" if stored and result.width else None,
        "seed": params.get("seed"),
        "params": params,
        "sha256": result.sha256 or None,
        "byteSize": result.byte_size if stored else None,
        "contentType": result.content_type or None,
        "createdAt": result.created_at.isoformat(),
        "tags": result.tag_names,
        "favorite": result.favorite,
    }


def _why_not_stored(result: GenerationResult) -> str:
    if result.status == GenerationResult.Status.FAILED:
        return "the generation failed: there is no image"
    if result.is_lost:
        return "lost: its upstream link expired before it was stored"
    status = result.storage_status or "none"
    return f"not stored yet ({status}): download it again once it is stored"
