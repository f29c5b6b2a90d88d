"""Image storage on local disk under MEDIA_ROOT."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.files.storage import FileSystemStorage


class LocalImageStorage(FileSystemStorage):
    """FileSystemStorage that overwrites: writing the same key again is harmless.

    It answers the methods `storage_backends.images` asks of every image storage:
    `iter_chunks`, `direct_url`, `is_not_found` and `unavailable_errors`.
    """

    backend_name = "local"
    # What the disk raises when it cannot serve a request; anything else is a bug.
    unavailable_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_overwrite", True)
        kwargs.setdefault("base_url", None)
        super().__init__(**kwargs)

    def iter_chunks(self, key: str, chunk_size: int) -> Iterator[bytes]:
        with self.open(key, "rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def direct_url(self, key: str, *, download_name: str | None = None) -> str | None:
        """Local files have no URL of their own: the image route streams them."""
        return None

    @staticmethod
    def is_not_found(exc: BaseException) -> bool:
        return isinstance(exc, FileNotFoundError)
