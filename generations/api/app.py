"""The JSON API's router: its operations, their OpenAPI document at `/api/openapi.json`
and the docs page at `/api/docs`, with every refusal in the API's one error body."""

from __future__ import annotations

import functools
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver
from ninja import NinjaAPI, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError

from .auth import ApiError, BearerToken, StaffSession, authenticate, method_not_allowed

_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_CODE_FOR_STATUS = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not_found"}


class GenvaultApi(NinjaAPI):
    """A NinjaAPI whose 405 answers as every other refusal does: after the caller is
    known (an anonymous caller gets its 401 first), in our error body, with `Allow`."""

    def _get_urls(self) -> list[URLResolver | URLPattern]:
        urls = super()._get_urls()
        return [
            URLPattern(u.pattern, _with_our_405(u.callback), u.default_args, u.name)
            if isinstance(u, URLPattern)
            else u
            for u in urls
        ]

    def get_content_type(self) -> str:
        # As the views' JsonResponse says it: clients compare it.
        return "application/json"


def _with_our_405(view: Any) -> Any:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response: HttpResponseBase = view(request, *args, **kwargs)
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        try:
            authenticate(request)
        except ApiError as exc:
            return exc.response()
        allowed = set(response["Allow"].split(", "))
        return method_not_allowed([m for m in _METHOD_ORDER if m in allowed])

    return wrapper


def _staff_only(view: Any) -> Any:
    """The document and its page: for the callers the API answers, no one else."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            authenticate(request)
        except ApiError as exc:
            return exc.response()
        response: HttpResponseBase = view(request, *args, **kwargs)
        return response

    return wrapper


api = GenvaultApi(
    title="genvault",
    version="2",
    description=(
        "Generate images with Seedream models, and list, search, keep and delete the "
        'results. Every error answers `{"error": {"code", "message", "field"}}`.'
    ),
    auth=[BearerToken(), StaffSession()],
    urls_namespace="api",
    docs=Swagger(settings={"validatorUrl": None, "persistAuthorization": False}),
    docs_url="docs",
    openapi_url="openapi.json",
    docs_decorator=_staff_only,
)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return exc.response()


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """The first thing wrong, naming its field as the caller spelled it (`limit`, or
    `tags.0` in a body)."""
    first = exc.errors[0] if exc.errors else {}
    where = [str(part) for part in first.get("loc", ())]
    # ("query", "limit"); ("body", "payload", "tags", 0): the source and the argument go.
    names = where[2:] if where[:1] == ["body"] else where[1:]
    field = ".".join(names) or "body"
    return ApiError(400, "invalid", f"{field}: {first.get('msg', 'invalid')}", field).response()


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return ApiError(404, "not_found", str(exc) or "not found").response()


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return ApiError(401, "unauthorized", "log in or send a Bearer token").response()


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = _CODE_FOR_STATUS.get(exc.status_code, "error")
    return ApiError(exc.status_code, code, str(exc)).response()


from . import operations  # noqa: E402  (the operations register on `api`)

api.add_router("", operations.router)
