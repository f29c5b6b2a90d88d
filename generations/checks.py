"""The two checks every value from outside passes before we keep or show it.

An id typed into a URL, a form or a JSON body, and an image URL that an upstream
answered or a bundle carried, both reach the database, `href`/`src` attributes,
redirects and the API. Each has one parser here, so that no caller can accept what
another refuses (`str.isdigit()` takes "²", which `int()` then refuses with a 500;
an upstream's `javascript:` URL becomes a clickable link).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import urlsplit

from django.conf import settings

# Ids are positive 64-bit integers: 19 ASCII digits at most.
MAX_ID = 2**63 - 1
_ID_RE = re.compile(r"[0-9]{1,19}")
# Printable ASCII without spaces: some parser would rewrite anything else.
_URL_RE = re.compile(r"[\x21-\x7e]+")
MAX_EXTERNAL_URL_CHARS = 8192


class UnsafeUrl(ValueError):
    """An external URL we will not store, link, redirect to or fetch."""


def parse_id(value: object) -> int | None:
    """A database id from user input, or None: ASCII digits only, at most 19, above 0.

    An int (from JSON) is taken as it is when it is in range; a bool is not an id.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value <= MAX_ID else None
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        return None
    number = int(value)
    return number if 0 < number <= MAX_ID else None


def checked_external_url(url: object, *, allowed_hosts: Collection[str] | None = None) -> str:
    """The URL itself when we may keep and link it: https, or http from an allowed host.

    `allowed_hosts` defaults to IMAGE_FETCH_ALLOWED_HOSTS: the hosts plain http may be
    fetched from are the hosts plain http may be linked to. Raises UnsafeUrl saying why.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("the image URL is missing")
    if len(url) > MAX_EXTERNAL_URL_CHARS:
        raise UnsafeUrl(f"the image URL is longer than {MAX_EXTERNAL_URL_CHARS} characters")
    if not _URL_RE.fullmatch(url):
        raise UnsafeUrl("the image URL holds spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise UnsafeUrl(f"the image URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrl(f"the image URL is not an https URL (scheme {scheme or 'none'!r})")
    if "@" in parts.netloc:
        raise UnsafeUrl("the image URL carries credentials")
    hosts = settings.IMAGE_FETCH_ALLOWED_HOSTS if allowed_hosts is None else allowed_hosts
    allowed = {h.lower() for h in hosts}
    if scheme == "http" and parts.netloc.lower() not in allowed:
        raise UnsafeUrl("the image URL is plain http from a host that is not allowed")
    return url


def is_safe_external_url(url: object) -> bool:
    """For rendering rows written before the check existed: link only what passes it."""
    try:
        checked_external_url(url)
    except UnsafeUrl:
        return False
    return True
