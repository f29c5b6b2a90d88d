"""Who may call the JSON API: a staff session, or a Bearer token made by a command.

One rule for every endpoint, whichever way it is routed: `authenticate` is what both
the OpenAPI security schemes (`BearerToken`, `StaffSession`) and the `api_endpoint`
decorator of the views not yet on the router call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from ninja.security import APIKeyCookie, HttpBearer

from generations.models import ApiToken

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message", "field"}}`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def response(self) -> JsonResponse:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return JsonResponse({"error": body}, status=self.status)


def _token_user(request: HttpRequest) -> Any:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "use 'Authorization: Bearer <token>'")
    try:
        token = (
            ApiToken.objects.active()
            .select_related("user")
            .only("last_used_at", "user__is_staff", "user__is_active", "user__username")
            .get(key_hash=ApiToken.hash_key(key.strip()))
        )
    except ApiToken.DoesNotExist:
        token = None
    if token is None:
        raise ApiError(401, "unauthorized", "the token is unknown or revoked")
    if not token.user.is_staff:
        raise ApiError(403, "forbidden", "the token's user is not staff")
    if token.last_used_at is None or token.last_used_at < timezone.now() - timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        raise ApiError(403, "csrf_failed", f"CSRF check failed: {reason}")


def _check_csrf(request: HttpRequest) -> None:
    check = _CsrfCheck(lambda req: HttpResponse())
    check.process_request(request)
    check.process_view(request, lambda req: HttpResponse(), (), {})


def authenticate(request: HttpRequest) -> Any:
    """The caller's user, or ApiError (401, 403, or 403 `csrf_failed`).

    A session must belong to staff and must pass the CSRF check on unsafe methods;
    a token skips CSRF (no browser sends it on its own). A request carrying an
    Authorization header is judged by its token alone, whatever session it has.
    """
    if "Authorization" in request.headers:
        request.user = _token_user(request)
    elif not request.user.is_authenticated:
        raise ApiError(401, "unauthorized", "log in or send a Bearer token")
    elif not request.user.is_staff:
        raise ApiError(403, "forbidden", "staff only")
    elif request.method not in SAFE_METHODS:
        _check_csrf(request)
    return request.user


class BearerToken(HttpBearer):
    """`Authorization: Bearer <token>`, a token made by `manage.py create_api_token`."""

    openapi_description = "A token made by `manage.py create_api_token USERNAME` (staff only)."

    def __call__(self, request: HttpRequest) -> Any:
        if "Authorization" not in request.headers:
            return None  # the session scheme answers for this caller
        return authenticate(request)

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        return None  # __call__ judges the header whole, with the session's rule beside it


class StaffSession(APIKeyCookie):
    """A logged-in staff user's session; unsafe methods need the CSRF token
    (the `X-CSRFToken` header, from the `csrftoken` cookie)."""

    param_name = settings.SESSION_COOKIE_NAME
    openapi_description = (
        "The session cookie of a logged-in staff user. PUT, POST and DELETE also need "
        "the X-CSRFToken header (the value of the csrftoken cookie)."
    )

    def __init__(self) -> None:
        # csrf=True tells the docs page to send the CSRF token with what it tries; the
        # check itself is authenticate's, answering the API's own error body.
        super().__init__(csrf=True)

    def __call__(self, request: HttpRequest) -> Any:
        return authenticate(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:  # pragma: no cover
        return None


def api_endpoint(
    *, methods: tuple[str, ...]
) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Authenticate, check the method, and turn ApiError into its JSON response."""

    def decorate(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                authenticate(request)
                if request.method not in methods:
                    return method_not_allowed(methods)
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()

        return wrapper

    return decorate


def method_not_allowed(methods: tuple[str, ...] | list[str]) -> JsonResponse:
    response = ApiError(405, "method_not_allowed", f"use {' or '.join(methods)}").response()
    response["Allow"] = ", ".join(methods)
    return response
