"""Image storage in any S3-compatible bucket (AWS S3, MinIO, R2, TOS)."""

from __future__ import annotations

from typing import Any

from botocore.config import Config
from storages.backends.s3 import S3Storage


class S3ImageStorage(S3Storage):
    """S3Storage signed with SigV4 that sends checksums only when required.

    Recent boto3 releases add CRC checksums to every upload by default, which MinIO,
    Ceph, R2 and TOS reject or mishandle; `when_required` keeps the old behaviour.
    """

    backend_name = "s3"

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
