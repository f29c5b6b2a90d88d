"""Storage settings resolved in one place, from the environment, at start-up.

`image_storages_from_env` turns the `STORAGE_*` variables into entries of Django's
`STORAGES` setting. A wrong or missing value raises `ImproperlyConfigured` naming
the variable, so that start-up stops with one clear line.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

LOCAL = "local"
S3 = "s3"
BACKENDS = (LOCAL, S3)
# A path of plain segments, such as /protected/: what nginx's X-Accel-Redirect names.
_LOCATION_RE = re.compile(r"/(?:[A-Za-z0-9._~-]+/)+")


def image_storages_from_env(env: environ.Env, *, media_root: str) -> tuple[str, dict[str, Any]]:
    """Return the active backend name and the `STORAGES` entries for image storage.

    `images_local` is always defined (local disk is always reachable); `images_s3`
    only when its bucket and credentials are set, and they must be in s3 mode.
    `images` is the backend new objects are written to.
    """
    mode = env.str("STORAGE_MODE", default=LOCAL).strip().lower()
    if mode not in BACKENDS:
        raise ImproperlyConfigured(f"STORAGE_MODE must be 'local' or 's3', not {mode!r}")

    storages: dict[str, Any] = {
        "images_local": {
            "BACKEND": "storage_backends.backends.local.LocalImageStorage",
            "OPTIONS": {"location": media_root},
        }
    }

    bucket = env.str("STORAGE_S3_BUCKET", default="")
    access_key = env.str("STORAGE_S3_ACCESS_KEY_ID", default="")
    secret_key = env.str("STORAGE_S3_SECRET_ACCESS_KEY", default="")
    endpoint = env.str("STORAGE_S3_ENDPOINT", default="")
    region = env.str("STORAGE_S3_REGION", default="us-east-1")
    public_base_url = env.str("STORAGE_PUBLIC_BASE_URL", default="")
    addressing_style = env.str(
        "STORAGE_S3_ADDRESSING_STYLE", default="path" if endpoint else "auto"
    )

    if mode == S3:
        for name, value in (
            ("STORAGE_S3_BUCKET", bucket),
            ("STORAGE_S3_ACCESS_KEY_ID", access_key),
            ("STORAGE_S3_SECRET_ACCESS_KEY", secret_key),
        ):
            if not value:
                raise ImproperlyConfigured(f"{name} is required when STORAGE_MODE=s3")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ImproperlyConfigured(
                f"STORAGE_S3_ENDPOINT must be an http(s) URL, not {endpoint!r}"
            )
    if addressing_style not in ("path", "virtual", "auto"):
        raise ImproperlyConfigured(
            f"STORAGE_S3_ADDRESSING_STYLE must be 'path' or 'virtual', not {addressing_style!r}"
        )
    if public_base_url and urlsplit(public_base_url).scheme not in ("http", "https"):
        raise ImproperlyConfigured(
            f"STORAGE_PUBLIC_BASE_URL must be an http(s) URL, not {public_base_url!r}"
        )

    if bucket and access_key and secret_key:
        storages["images_s3"] = {
            "BACKEND": "storage_backends.backends.s3.S3ImageStorage",
            "OPTIONS": {
                "bucket_name": bucket,
                "access_key": access_key,
                "secret_key": secret_key,
                "endpoint_url": endpoint or None,
                "region_name": region,
                "addressing_style": addressing_style,
                "public_base_url": public_base_url.rstrip("/"),
            },
        }
    storages["images"] = storages[f"images_{mode}"]
    return mode, storages


def local_accel_redirect_from_env(env: environ.Env) -> str:
    """`STORAGE_LOCAL_ACCEL_REDIRECT`: nginx's internal location for MEDIA_ROOT, or "".

    When set, the image route answers a checked request for a local object with an
    empty body and `X-Accel-Redirect: <location><key>`, and nginx sends the bytes.
    """
    location = env.str("STORAGE_LOCAL_ACCEL_REDIRECT", default="").strip()
    segments = location.strip("/").split("/")
    if location and (
        not _LOCATION_RE.fullmatch(location) or any(not s.strip(".") for s in segments)
    ):
        raise ImproperlyConfigured(
            "STORAGE_LOCAL_ACCEL_REDIRECT must be a path that starts and ends with '/', "
            f"such as /protected/, not {location!r}"
        )
    return location
