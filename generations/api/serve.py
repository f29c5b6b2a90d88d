"""HTTP responses for stored image bytes: streaming, ranges, validators, redirects.

One function answers for a result whichever backend holds its bytes: local files
stream with `Range` and `If-None-Match` support (or, behind nginx with
STORAGE_LOCAL_ACCEL_REDIRECT set, are handed to nginx to send), S3 objects
redirect to a presigned (or public) URL, and images not stored yet redirect to the
external URL while it lives.

The gallery links stored bytes at a versioned URL (`?v=` and the start of their
SHA-256): those answers may be kept by the browser for good, since a result's new
bytes get a new URL. A `v` naming other bytes than the stored ones (a page rendered
before a re-store) is answered as the stable URL is, never as immutable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

from generations.models import IMAGE_VERSION_LENGTH, GenerationResult
from storage_backends import images as image_storage

if TYPE_CHECKING:
    from generations.services.downloads import ResultsArchive

CACHE_CONTROL = "private, max-age=86400"
IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"
# One range of ASCII digits (`\d` and int() also take "٣"), each at most 19 of them: a
# longer number is past any object we hold, and int() refuses one over 4,300 digits.
_RANGE_SPEC_RE = re.compile(r"([0-9]{0,19})-([0-9]{0,19})")
_CHUNK = 256 * 1024


def download_name(result: GenerationResult) -> str:
    """A safe file name: the id and a slug of the prompt, nothing the user can steer."""
    from django.utils.text import slugify

    slug = slugify(result.generation.prompt_text)[:40].strip("-") or "image"
    extension = image_storage.IMAGE_EXTENSIONS.get(result.content_type, "bin")
    return f"genvault-{result.pk}-{slug}.{extension}"


def archive_response(archive: ResultsArchive) -> StreamingHttpResponse:
    """A ZIP of results as an attachment, streamed, with its length known up front."""
    response = StreamingHttpResponse(archive.chunks, content_type="application/zip")
    response["Content-Length"] = str(archive.size)
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=archive.filename
    )
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def image_response(
    request: HttpRequest, result: GenerationResult, *, thumbnail: bool = False
) -> HttpResponseBase:
    download = request.GET.get("download") == "1"
    if not result.is_stored:
        # Only to a URL that passed the https check: a row written before upstream URLs
        # were checked may hold a `javascript:` or `//elsewhere` one.
        if thumbnail or result.external_url_expired or not result.external_url_is_safe:
            raise Http404("this image is not stored")
        response: HttpResponseBase = HttpResponseRedirect(result.external_url)
        response["Cache-Control"] = "no-store"
        return response

    key = result.thumbnail_key if thumbnail else result.storage_key
    if not key:
        raise Http404("no thumbnail for this image")
    content_type = "image/webp" if thumbnail else result.content_type
    # An edited or imported row: never SVG or HTML inline.
    if content_type not in image_storage.IMAGE_EXTENSIONS:
        content_type = "application/octet-stream"
    name = download_name(result) if download and not thumbnail else None

    redirect = image_storage.redirect_url(
        backend=result.storage_backend, key=key, download_name=name
    )
    if redirect:
        response = HttpResponseRedirect(redirect)
        response["Cache-Control"] = "private, max-age=300"
        return response

    etag = f'"{result.sha256}{"-thumb" if thumbnail else ""}"'
    versioned = _names_stored_bytes(request, result)
    cache_control = IMMUTABLE_CACHE_CONTROL if versioned else CACHE_CONTROL
    if _etag_matches(request.headers.get("If-None-Match", ""), etag):
        response = HttpResponse(status=304)
        _set_validators(response, etag, cache_control)
        return response

    disposition = (
        content_disposition_header(as_attachment=True, filename=name) if name else "inline"
    )
    internal = image_storage.internal_redirect_path(backend=result.storage_backend, key=key)
    if internal:
        # The request was checked; nginx sends the bytes, answering Range and
        # revalidation itself, and keeps these headers of ours.
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = internal
        _set_validators(response, etag, cache_control)
        response["Content-Disposition"] = disposition
        return response

    try:
        fh = image_storage.open_object(backend=result.storage_backend, key=key)
        size = image_storage.object_size(backend=result.storage_backend, key=key)
    except FileNotFoundError:
        raise Http404("the stored object is missing") from None

    byte_range = _parse_range(request.headers.get("Range", ""), size)
    if byte_range == "unsatisfiable":
        fh.close()
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    if isinstance(byte_range, tuple) and request.headers.get("If-Range", etag) == etag:
        start, end = byte_range
        fh.seek(start)
        response = StreamingHttpResponse(
            _read_span(fh, end - start + 1), status=206, content_type=content_type
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(end - start + 1)
    else:
        response = FileResponse(fh, content_type=content_type)
        response["Content-Length"] = str(size)
    response["Accept-Ranges"] = "bytes"
    _set_validators(response, etag, cache_control)
    response["Content-Disposition"] = disposition
    return response


def _names_stored_bytes(request: HttpRequest, result: GenerationResult) -> bool:
    """Whether the URL's `v` names the bytes stored now (at least IMAGE_VERSION_LENGTH
    characters of their SHA-256): only then may the browser keep the answer for good."""
    version = request.GET.get("v", "")
    return len(version) >= IMAGE_VERSION_LENGTH and result.sha256.startswith(version)


def _set_validators(response: HttpResponseBase, etag: str, cache_control: str) -> None:
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"


def _etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One `bytes=a-b` range as (start, end) inclusive; None to send everything.

    "unsatisfiable" (a 416) for a bytes range that is malformed, absurd or past the end.
    """
    header = header.strip()
    unit, _, spec = header.partition("=")
    if not header or unit.strip().lower() != "bytes" or "," in spec:
        return None  # several ranges or a unit we do not speak: send the whole
    match = _RANGE_SPEC_RE.fullmatch(spec.strip())
    if not match or (not match[1] and not match[2]):
        return "unsatisfiable"
    if not match[1]:
        length = int(match[2])
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(match[1])
    end = int(match[2]) if match[2] else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _read_span(fh: IO[bytes], length: int) -> Iterator[bytes]:
    try:
        while length > 0:
            chunk = fh.read(min(_CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk
    finally:
        fh.close()
