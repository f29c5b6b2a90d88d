"""The pages a share link opens, for anyone holding it: no login, no session.

They show exactly what was shared (each stored image, its prompt and model) and
serve those images at URLs under the link itself, so nothing on the page leads
anywhere else: no storage key, no upstream URL, no other result, no count. A link that
was altered, has expired or was revoked answers 404, and so does every image under it,
at once (the answers are never cached).
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from generations.api.serve import download_name
from generations.services.sharing import share_for_token
from storage_backends import images as image_storage

from . import selectors

_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp")


def _private(response: HttpResponseBase) -> HttpResponseBase:
    """Headers every answer under a link carries: not kept, not indexed, and the link
    itself never sent on as a Referer."""
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@require_GET
def page(request: HttpRequest, token: str) -> HttpResponse:
    share = share_for_token(token)
    results = selectors.shared_results(share=share) if share is not None else []
    if not results:
        raise Http404("No such share.")
    response = render(request, "shared/page.html", {"results": results, "token": token})
    _private(response)
    return response


@require_GET
def image(request: HttpRequest, token: str, result_id: int) -> HttpResponseBase:
    """A shared image's bytes, streamed through here whichever backend holds them (a
    redirect to a bucket would show its key)."""
    share = share_for_token(token)
    result = selectors.shared_result(share=share, result_id=result_id) if share else None
    if result is None:
        raise Http404("No such image.")
    content_type = result.content_type
    if content_type not in _CONTENT_TYPES:
        content_type = "application/octet-stream"
    response = StreamingHttpResponse(
        image_storage.iter_object_chunks(backend=result.storage_backend, key=result.storage_key),
        content_type=content_type,
    )
    if result.byte_size is not None:
        response["Content-Length"] = str(result.byte_size)
    response["Content-Disposition"] = (
        content_disposition_header(as_attachment=True, filename=download_name(result))
        if request.GET.get("download") == "1"
        else "inline"
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return _private(response)
