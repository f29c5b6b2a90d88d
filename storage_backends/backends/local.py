"""Image storage on local disk under MEDIA_ROOT."""

from __future__ import annotations

from typing import Any

from django.core.files.storage import FileSystemStorage


class LocalImageStorage(FileSystemStorage):
    """FileSystemStorage that overwrites: writing the same key again is harmless."""

    backend_name = "local"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_overwrite", True)
        kwargs.setdefault("base_url", None)
        super().__init__(**kwargs)
