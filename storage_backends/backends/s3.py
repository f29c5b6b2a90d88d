"""Image storage in any S3-compatible bucket (AWS S3, MinIO, R2, TOS)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from storages.backends.s3 import S3Storage

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3ImageStorage(S3Storage):
    """S3Storage signed with SigV4 that sends checksums only when required.

    Recent boto3 releases add CRC checksums to every upload by default, which MinIO,
    Ceph, R2 and TOS reject or mishandle; `when_required` keeps the old behaviour.
    It answers the methods `storage_backends.images` asks of every image storage:
    `iter_chunks`, `direct_url`, `public_url`, `internal_redirect`, `is_not_found` and
    `unavailable_errors`.
    """

    backend_name = "s3"
    # botocore's own failures (endpoint down, timeouts, refused credentials, 5xx) and
    # the socket's: the endpoint cannot serve us now. Anything else is a bug.
    unavailable_errors: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, OSError)

    def __init__(self, *, addressing_style: str = "auto", public_base_url: str = "", **kwargs: Any):
        self.public_base_url = public_base_url
        kwargs.setdefault("signature_version", "s3v4")
        kwargs.setdefault("file_overwrite", True)
        kwargs.setdefault("default_acl", None)
        kwargs.setdefault("querystring_auth", True)
        kwargs.setdefault("querystring_expire", 3600)
        kwargs.setdefault(
            "client_config",
            Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        super().__init__(**kwargs)

    def url(
        self, name: str, parameters: Any = None, expire: Any = None, http_method: Any = None
    ) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{name.lstrip('/')}"
        return super().url(name, parameters=parameters, expire=expire, http_method=http_method)

    def iter_chunks(self, key: str, chunk_size: int) -> Iterator[bytes]:
        """Read from the response stream: S3File would first load the whole object."""
        body = self.bucket.Object(key).get()["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def direct_url(self, key: str, *, download_name: str | None = None) -> str | None:
        """A presigned URL (or the public one) the client fetches the object from."""
        if download_name and not self.public_base_url:
            disposition = f'attachment; filename="{download_name}"'
            return self.url(key, parameters={"ResponseContentDisposition": disposition})
        return self.url(key)

    def public_url(self, key: str) -> str | None:
        """The public URL when the bucket has one (STORAGE_PUBLIC_BASE_URL), else None:
        a presigned URL lets whoever holds it read a private object until it expires."""
        if not self.public_base_url:
            return None
        return f"{self.public_base_url}/{key.lstrip('/')}"

    def internal_redirect(self, key: str) -> str | None:
        """None: the client fetches S3 objects from `direct_url`, not through a proxy."""
        return None

    @staticmethod
    def is_not_found(exc: BaseException) -> bool:
        if isinstance(exc, FileNotFoundError):
            return True
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", "")) in _NOT_FOUND_CODES
        return False
