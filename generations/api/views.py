"""The JSON API: generate, poll a generation, stars and tags on results, the stable image
route, health."""

from __future__ import annotations

import json
import re
from typing import Any

from django.db import connection
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET

from generations.api.serve import image_response
from generations.checks import is_safe_external_url
from generations.inputs import InvalidInput, parse_generate
from generations.models import Generation, GenerationResult, InvalidTagName, Tag
from generations.services.generate import generation_create
from generations.services.organize import (
    results_add_tags,
    results_remove_tags,
    results_set_favorite,
)
from storage_backends.images import check_storage

from .auth import ApiError, api_endpoint

MAX_BODY_BYTES = 16 * 1024 * 1024
# ASCII digits only: int() also takes "٣", " 7" and "1_000", and refuses 5,000 digits.
_CONTENT_LENGTH_RE = re.compile(r"[0-9]+")


def _client_url(request: HttpRequest, url: str) -> str | None:
    """A URL a client may follow: a path of ours made absolute, or a checked external URL.

    Anything else (a `javascript:` URL an upstream answered before its URLs were checked,
    a `//elsewhere` path a bundle carried) is None: the image is then not linked at all.
    """
    if not url:
        return None
    if url.startswith("/"):
        # A path of ours only: a browser reads "//host/" and "/\\host/" as another site.
        if url_has_allowed_host_and_scheme(url, allowed_hosts=None):
            return request.build_absolute_uri(url)
        return None
    return url if is_safe_external_url(url) else None


def result_json(request: HttpRequest, result: GenerationResult) -> dict[str, Any]:
    error = None
    if result.status == GenerationResult.Status.FAILED:
        error = {"code": result.error_code, "message": result.error_message}
    external_url = result.external_url if result.external_url_is_safe else None
    return {
        "id": result.pk,
        "model": result.upstream_model_id,
        "modelName": result.model.name if result.model else None,
        "status": result.status,
        "imageUrl": _client_url(request, result.image_url),
        "externalImageUrl": external_url,
        "externalImageUrlExpiresAt": (
            result.external_url_expires_at.isoformat() if result.external_url_expires_at else None
        ),
        "storageStatus": result.storage_status or None,
        # Made by the derivatives stage a moment after storing: null until then.
        "thumbnailUrl": (
            request.build_absolute_uri(result.versioned_thumbnail_url)
            if result.has_thumbnail
            else None
        ),
        "storageError": result.storage_error or None,
        "lost": result.is_lost,
        "paramsUsed": result.params_used_json(external_url=external_url),
        "error": error,
        "favorite": result.favorite,
        "tags": result.tag_names,  # prefetch `tags` for many results
    }


def generation_json(request: HttpRequest, generation: Generation) -> dict[str, Any]:
    results = generation.results.select_related("model").prefetch_related("tags").order_by("id")
    usage = None
    if generation.usage_generated_images is not None or generation.usage_output_tokens is not None:
        usage = {
            "generatedImages": generation.usage_generated_images,
            "outputTokens": generation.usage_output_tokens,
        }
    return {
        "generationId": generation.pk,
        "prompt": generation.prompt_text,
        "createdAt": generation.created_at.isoformat(),
        "usage": usage,
        "results": [result_json(request, r) for r in results],
    }


def _json_body(request: HttpRequest) -> Any:
    length = request.headers.get("Content-Length") or "0"
    if not _CONTENT_LENGTH_RE.fullmatch(length):
        raise ApiError(400, "invalid_length", "Content-Length must be a number of bytes")
    if len(length) > len(str(MAX_BODY_BYTES)) or int(length) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", "the body is larger than 16 MB")
    content_type = request.headers.get("Content-Type", "")
    if content_type and not content_type.split(";")[0].strip().endswith("json"):
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    try:
        return json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None


@api_endpoint(methods=("POST",))
def generate(request: HttpRequest) -> HttpResponse:
    try:
        wanted = parse_generate(_json_body(request))
    except InvalidInput as exc:
        raise ApiError(400, "invalid", exc.message, exc.field) from None
    generation = generation_create(
        user=request.user,
        models=wanted.models,
        prompt_text=wanted.prompt_text,
        prompt=wanted.prompt,
        size=wanted.size,
        sizes=wanted.sizes,
        params=wanted.params,
        reference=wanted.reference,
    )
    return JsonResponse(generation_json(request, generation))


@api_endpoint(methods=("GET",))
def generation_detail(request: HttpRequest, generation_id: int) -> HttpResponse:
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is None:
        raise ApiError(404, "not_found", f"no generation with id {generation_id}")
    return JsonResponse(generation_json(request, generation))


def _result_json_or_404(request: HttpRequest, result_id: int) -> JsonResponse:
    result = (
        GenerationResult.objects.select_related("model")
        .prefetch_related("tags")
        .filter(pk=result_id)
        .first()
    )
    if result is None:
        raise ApiError(404, "not_found", f"no result with id {result_id}")
    return JsonResponse(result_json(request, result))


def _check_result_exists(result_id: int) -> None:
    if not GenerationResult.objects.filter(pk=result_id).exists():
        raise ApiError(404, "not_found", f"no result with id {result_id}")


@api_endpoint(methods=("PUT", "DELETE"))
def result_favorite(request: HttpRequest, result_id: int) -> HttpResponse:
    """PUT stars the result, DELETE takes the star off; both answer the result."""
    if not results_set_favorite(result_ids=[result_id], favorite=request.method == "PUT"):
        raise ApiError(404, "not_found", f"no result with id {result_id}")
    return _result_json_or_404(request, result_id)


@api_endpoint(methods=("POST",))
def result_tags(request: HttpRequest, result_id: int) -> HttpResponse:
    """`{"tags": [names]}` puts those tags on the result (creating new ones); answers it."""
    _check_result_exists(result_id)
    body = _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object", "body")
    unknown = sorted(set(body) - {"tags"})
    if unknown:
        raise ApiError(400, "invalid", f"unknown field {unknown[0]!r}", unknown[0])
    names = body.get("tags")
    if not isinstance(names, list):
        raise ApiError(400, "invalid", "tags must be a list of tag names", "tags")
    try:
        results_add_tags(result_ids=[result_id], names=names)
    except InvalidTagName as exc:
        raise ApiError(400, "invalid", exc.message, "tags") from None
    return _result_json_or_404(request, result_id)


@api_endpoint(methods=("DELETE",))
def result_tag(request: HttpRequest, result_id: int, tag_name: str) -> HttpResponse:
    """Take the named tag (any case) off the result; answers the result, with or without
    the tag having been there."""
    _check_result_exists(result_id)
    results_remove_tags(result_ids=[result_id], names=[tag_name])
    return _result_json_or_404(request, result_id)


@api_endpoint(methods=("GET",))
def tags(request: HttpRequest) -> HttpResponse:
    """Every tag by name, with how many results carry it."""
    counted = Tag.objects.annotate(n=Count("result_links")).order_by("key")
    return JsonResponse(
        {"tags": [{"name": name, "count": n} for name, n in counted.values_list("name", "n")]}
    )


# What the image route reads of a result: the hot path of the product, so no more.
_IMAGE_FIELDS = (
    "status",
    "generation_id",
    "external_url",
    "external_url_expires_at",
    "storage_status",
    "storage_backend",
    "storage_key",
    "thumbnail_key",
    "content_type",
    "sha256",
)


def _result_or_404(result_id: int) -> GenerationResult:
    try:
        result = GenerationResult.objects.only(*_IMAGE_FIELDS).get(pk=result_id)
    except GenerationResult.DoesNotExist:
        result = None
    if result is None or result.status != GenerationResult.Status.SUCCESS:
        raise ApiError(404, "not_found", f"no image with id {result_id}")
    return result


@api_endpoint(methods=("GET", "HEAD"))
def image(request: HttpRequest, result_id: int) -> HttpResponseBase:
    return _image(request, result_id, thumbnail=False)


@api_endpoint(methods=("GET", "HEAD"))
def thumbnail(request: HttpRequest, result_id: int) -> HttpResponseBase:
    return _image(request, result_id, thumbnail=True)


def _image(request: HttpRequest, result_id: int, *, thumbnail: bool) -> HttpResponseBase:
    result = _result_or_404(result_id)
    try:
        return image_response(request, result, thumbnail=thumbnail)
    except Http404 as exc:
        raise ApiError(404, "not_found", str(exc)) from None


@api_endpoint(methods=("GET",))
def export(request: HttpRequest) -> HttpResponse:
    """The JSON backup; `?images=1` streams a ZIP holding it and every stored image."""
    from django.http import StreamingHttpResponse
    from django.utils import timezone

    from generations.backups.export import export_data, iter_export_zip

    if request.GET.get("images") == "1":
        name = f"genvault-export-{timezone.now():%Y%m%d-%H%M%S}.zip"
        archive = StreamingHttpResponse(iter_export_zip(), content_type="application/zip")
        archive["Content-Disposition"] = f'attachment; filename="{name}"'
        archive["Cache-Control"] = "no-store"
        return archive  # type: ignore[return-value]  # api_endpoint passes any response through
    response = JsonResponse(export_data())
    response["Cache-Control"] = "no-store"
    return response


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return "unavailable"
    return "ok"


def _check_broker() -> str:
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        return "unavailable"
    return "ok"


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    checks = {"database": _check_database(), "storage": check_storage(), "broker": _check_broker()}
    healthy = all(v == "ok" for v in checks.values())
    response = JsonResponse(checks, status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    return response
