"""Image storage in any S3-compatible bucket (AWS S3, MinIO, R2, TOS)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.core.files import File
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3ImageStorage(S3Storage):
    """S3Storage signed with SigV4 that sends checksums only when required.

    Recent boto3 releases add CRC checksums to every upload by default, which MinIO,
    Ceph, R2 and TOS reject or mishandle; `when_required` keeps the old behaviour.
    It answers the methods `storage_backends.images` asks of every image storage:
    `iter_chunks`, `save_reporting_md5`, `direct_url`, `public_url`, `internal_redirect`,
    `is_not_found` and `unavailable_errors`.

    Reads and single-part writes go through one boto3 client, made on first use and
    shared by every thread (a client is thread-safe): S3Storage's resource objects cost
    more to make per object than a small image takes to send.
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
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The one boto3 S3 client of this storage, made lazily, as connections are."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._create_session().client(
                        "s3",
                        region_name=self.region_name,
                        use_ssl=self.use_ssl,
                        endpoint_url=self.endpoint_url,
                        config=self.client_config,
                        verify=self.verify,
                    )
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.pop("_client", None)
        state.pop("_client_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._client = None
        self._client_lock = threading.Lock()

    def url(
        self, name: str, parameters: Any = None, expire: Any = None, http_method: Any = None
    ) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{name.lstrip('/')}"
        return super().url(name, parameters=parameters, expire=expire, http_method=http_method)

    def iter_chunks(self, key: str, chunk_size: int) -> Iterator[bytes]:
        """Read from the response stream: S3File would first load the whole object."""
        name = self._normalize_name(clean_name(key))
        body = self.client.get_object(Bucket=self.bucket_name, Key=name)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def save_reporting_md5(self, key: str, path: Path, *, md5: str) -> str | None:
        """Write the file at `path` (whose MD5, in hex, is `md5`) to `key`; return the MD5
        the endpoint reports for what it now holds, or None when its answer is no MD5.

        A file under the multipart threshold goes in one PUT sent with its Content-MD5,
        which the endpoint checks before it keeps the object, and whose ETag is the MD5
        of what it kept. A multipart upload's ETag is no MD5 of the object, nor is the
        ETag of an object encrypted with KMS or a customer's key: None, and the caller
        reads the object back.
        """
        size = path.stat().st_size
        if size >= self.transfer_config.multipart_threshold:
            with path.open("rb") as fh:
                self.save(key, File(fh, name=key))
            return None
        name = self._normalize_name(clean_name(key))
        with path.open("rb") as fh:
            response = self.client.put_object(
                Bucket=self.bucket_name,
                Key=name,
                Body=fh,
                ContentLength=size,
                ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode("ascii"),
                **self._get_write_parameters(name),
            )
        encryption = str(response.get("ServerSideEncryption", ""))
        if encryption.startswith("aws:kms") or response.get("SSECustomerAlgorithm"):
            return None
        return str(response.get("ETag", "")).strip('"').lower()

    def delete(self, name: str) -> None:
        """One DELETE through the shared client: deleting an absent key is no error."""
        try:
            self.client.delete_object(
                Bucket=self.bucket_name, Key=self._normalize_name(clean_name(name))
            )
        except ClientError as err:
            if err.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
                raise

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
