"""The JSON API: generate, poll a generation, stars and tags on results, ZIP downloads,
share links, the stable image route, health."""

from __future__ import annotations

import json
import re
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from generations.api.serve import archive_response, image_response
from generations.checks import is_safe_external_url, parse_id
from generations.filters import API_FILTER_FIELDS, InvalidFilter, api_filters
from generations.inputs import InvalidInput, parse_generate
from generations.models import (
    Generation,
    GenerationResult,
    ImageModel,
    InvalidTagName,
    Share,
)
from generations.selectors import results_filtered
from generations.services.generate import generation_create
from generations.services.health import health_report
from generations.services.organize import (
    results_add_tags,
    results_remove_tags,
    results_set_favorite,
)
from generations.services.sharing import (
    ShareRefused,
    share_create,
    share_lifetime,
    share_revoke,
)
from generations.usage import (
    UsageQueryForm,
    generation_cost,
    generation_usage,
    usage_rows,
    usage_totals,
)

from .auth import ApiError, api_endpoint, authenticate

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
        # Of the stored image: null until it is stored.
        "width": result.width,
        "height": result.height,
        "sha256": result.sha256 or None,
        "createdAt": result.created_at.isoformat(),
        "generationId": result.generation_id,
    }


def generation_json(request: HttpRequest, generation: Generation) -> dict[str, Any]:
    results = list(
        generation.results.select_related("model").prefetch_related("tags").order_by("id")
    )
    cost = generation_cost(results)
    return {
        "generationId": generation.pk,
        "status": generation.status,
        "prompt": generation.prompt_text,
        "createdAt": generation.created_at.isoformat(),
        "usage": generation_usage(generation),
        "cost": cost.as_json() if cost else None,
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
    """Generate: 200 with every result once the models have answered, or, with
    `"wait": false`, 202 at once with the running generation and its Location to poll."""
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
        references=wanted.references,
        background=not wanted.wait,
    )
    if wanted.wait:
        return JsonResponse(generation_json(request, generation))
    if generation.status == Generation.Status.INTERRUPTED:
        raise ApiError(
            503,
            "queue_unavailable",
            "the generation could not be queued (nothing was generated): try again later, "
            'or without "wait": false',
        )
    response = JsonResponse(generation_json(request, generation), status=202)
    response["Location"] = request.build_absolute_uri(
        reverse("api:generation", args=[generation.pk])
    )
    return response


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
    if parse_id(result_id) is None:  # above the bigint: SQLite would refuse to compare it
        raise ApiError(404, "not_found", f"no result with id {result_id}")
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


@api_endpoint(methods=("POST",))
def downloads(request: HttpRequest) -> HttpResponseBase:
    """`{"resultIds": [ids]}` or `{"filter": {...}}`: the ZIP of those results' stored
    images and their metadata.json, streamed with its Content-Length."""
    from generations.services.downloads import (
        TooManyToDownload,
        results_archive,
        results_for_download,
    )

    body = _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object", "body")
    unknown = sorted(set(body) - {"resultIds", "filter"})
    if unknown:
        raise ApiError(400, "invalid", f"unknown field {unknown[0]!r}", unknown[0])
    if ("resultIds" in body) == ("filter" in body):
        raise ApiError(400, "invalid", "send resultIds or filter, one of the two", "resultIds")
    if "resultIds" in body:
        ids = _result_ids(body["resultIds"])
        results = GenerationResult.objects.filter(pk__in=ids).order_by("-id")
    else:
        wanted = body["filter"]
        if not isinstance(wanted, dict):
            raise ApiError(400, "invalid", "filter must be an object", "filter")
        for key, value in wanted.items():
            if key not in API_FILTER_FIELDS:
                raise ApiError(400, "invalid", f"unknown filter {key!r}", f"filter.{key}")
            if value is not None and not isinstance(value, str | int | bool):
                raise ApiError(400, "invalid", f"{key} must be text or a number", f"filter.{key}")
        try:
            filters = api_filters(wanted, models=list(ImageModel.objects.all()))
        except InvalidFilter as exc:
            raise ApiError(400, "invalid", exc.message, f"filter.{exc.field}") from None
        results = results_filtered(filters=filters)
    try:
        rows = results_for_download(results)
    except TooManyToDownload as exc:
        field = "filter" if "filter" in body else "resultIds"
        raise ApiError(400, "too_many", str(exc), field) from None
    return archive_response(results_archive(results=rows))


def _result_ids(value: Any) -> list[int]:
    from generations.services.downloads import download_limit

    if not isinstance(value, list) or not value:
        raise ApiError(400, "invalid", "resultIds must be a list of result ids", "resultIds")
    if len(value) > download_limit():
        raise ApiError(400, "too_many", f"at most {download_limit()} results at once", "resultIds")
    ids = [parse_id(v) if not isinstance(v, bool) else None for v in value]
    if any(i is None for i in ids):
        raise ApiError(400, "invalid", "resultIds must be a list of result ids", "resultIds")
    return [i for i in ids if i is not None]


def share_json(request: HttpRequest, share: Share) -> dict[str, Any]:
    return {
        "id": share.pk,
        "url": request.build_absolute_uri(share.path),
        "kind": share.kind,
        "resultIds": sorted(result.pk for result in share.results.all()),
        "tag": share.tag_name or None,
        "createdBy": share.created_by.get_username() if share.created_by else None,
        "createdAt": share.created_at.isoformat(),
        "expiresAt": share.expires_at.isoformat(),
        "revokedAt": share.revoked_at.isoformat() if share.revoked_at else None,
        "active": share.is_active,
    }


@api_endpoint(methods=("GET", "POST"))
def shares(request: HttpRequest) -> HttpResponse:
    """GET lists every share link, newest first; POST makes one: `{"resultId": N}`,
    `{"resultIds": [ids]}` or `{"tag": name}`, and optional `"expiresIn"` seconds."""
    if request.method == "GET":
        listed = Share.objects.select_related("created_by").prefetch_related("results")
        return JsonResponse({"shares": [share_json(request, share) for share in listed]})
    body = _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object", "body")
    unknown = sorted(set(body) - {"resultId", "resultIds", "tag", "expiresIn"})
    if unknown:
        raise ApiError(400, "invalid", f"unknown field {unknown[0]!r}", unknown[0])
    named = [key for key in ("resultId", "resultIds", "tag") if key in body]
    if len(named) != 1:
        raise ApiError(400, "invalid", "send one of resultId, resultIds or tag", "resultId")
    result_ids: list[int] | None = None
    tag: str | None = None
    if "resultId" in body:
        result_id = parse_id(body["resultId"])
        if result_id is None:
            raise ApiError(400, "invalid", "resultId must be a result id", "resultId")
        result_ids = [result_id]
    elif "resultIds" in body:
        result_ids = _result_ids(body["resultIds"])
    else:
        if not isinstance(body["tag"], str) or not body["tag"].strip():
            raise ApiError(400, "invalid", "tag must be a tag name", "tag")
        tag = body["tag"]
    try:
        share = share_create(
            user=request.user,
            result_ids=result_ids,
            tag=tag,
            lifetime=share_lifetime(body.get("expiresIn")),
        )
    except ShareRefused as exc:
        raise ApiError(400, "invalid", exc.message, exc.field or named[0]) from None
    return JsonResponse(share_json(request, share), status=201)


@api_endpoint(methods=("DELETE",))
def share_detail(request: HttpRequest, share_id: int) -> HttpResponse:
    """Revoke the share: its link and images answer 404 from now on; answers the share."""
    share = Share.objects.filter(pk=share_id).first()
    if share is None:
        raise ApiError(404, "not_found", f"no share with id {share_id}")
    share_revoke(share=share, user=request.user)
    return JsonResponse(share_json(request, share))


@api_endpoint(methods=("GET",))
def usage(request: HttpRequest) -> HttpResponse:
    """Images and cost by day, model or user, between two days (both included)."""
    query = UsageQueryForm(request.GET)
    if not query.is_valid():
        field, errors = next(iter(query.errors.items()))
        raise ApiError(400, "invalid", f"{field}: {errors[0]}", field)
    data = query.cleaned_data
    group_by = data["groupBy"]
    rows = usage_rows(since=data["since"], until=data["until"], group_by=group_by)
    return JsonResponse(
        {
            "since": data["since"].isoformat() if data["since"] else None,
            "until": data["until"].isoformat() if data["until"] else None,
            "groupBy": group_by,
            "rows": [row.as_json(group_by) for row in rows],
            "totals": [
                {k: v for k, v in row.as_json(group_by).items() if k != group_by}
                for row in usage_totals(rows)
            ],
        }
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


@csrf_exempt
def not_found(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    """Any other path under /api/ (`/api/results/abc` too): the API's own 404, in its
    error body, once the caller is known as for every other refusal."""
    try:
        authenticate(request)
    except ApiError as exc:
        return exc.response()
    return ApiError(404, "not_found", f"no operation at {request.path}").response()


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    report, healthy = health_report()
    response = JsonResponse(report, status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    return response
