"""Image storage on local disk under MEDIA_ROOT, durable before the row says `stored`."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage

# What a write in progress is called: hidden, and never a key of ours (see `parse_key`).
TEMPORARY_SUFFIX = ".tmp"
# A write touches its file with every chunk and ends within a task's time limit; a
# part-file untouched for longer has no writer left (it was killed mid-write).
ABANDONED_AFTER_SECONDS = 3600


class LocalImageStorage(FileSystemStorage):
    """FileSystemStorage that overwrites atomically and durably.

    An object is written to a temporary name in its own folder, flushed to the disk,
    renamed into place and the folder flushed too: after `save` returns, a power cut
    leaves the whole object at its key, and a write that fails (a source that breaks
    off, a full disk) leaves the previous object, if any, untouched and no part-file.

    It answers the methods `storage_backends.images` asks of every image storage:
    `iter_chunks`, `save_reporting_md5`, `direct_url`, `public_url`, `internal_redirect`,
    `is_not_found` and `unavailable_errors`.
    """

    backend_name = "local"
    # What the disk raises when it cannot serve a request; anything else is a bug.
    unavailable_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_overwrite", True)
        kwargs.setdefault("base_url", None)
        super().__init__(**kwargs)

    def _save(self, name: str, content: File) -> str:
        full_path = self.path(name)
        directory = os.path.dirname(full_path)
        created = self._make_folders(directory)

        temporary = os.path.join(
            directory, f".{os.path.basename(full_path)}.{secrets.token_hex(8)}{TEMPORARY_SUFFIX}"
        )
        # 0o666 less the umask, as Django creates files: a web server reading MEDIA_ROOT
        # (X-Accel-Redirect) must be able to, which a mkstemp file (0o600) would forbid.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(temporary, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in content.chunks():
                    fh.write(chunk.encode() if isinstance(chunk, str) else chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(temporary, self.file_permissions_mode)
            os.replace(temporary, full_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        # The rename is on disk only once its folder is; a folder made for this object
        # is only found again once its own parent is.
        for folder in (directory, *created):
            _fsync_folder(folder)
        # The group of MEDIA_ROOT, as Django gives it: a web server reading it shares it.
        self._ensure_location_group_id(full_path)  # type: ignore[attr-defined]
        return os.path.relpath(full_path, self.location).replace("\\", "/")

    def _make_folders(self, directory: str) -> list[str]:
        """Create `directory` and its missing parents; return the parents of those made."""
        missing = []
        folder = directory
        while not os.path.isdir(folder) and folder != os.path.dirname(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        try:
            os.makedirs(directory, exist_ok=True)
        except FileExistsError:
            raise FileExistsError(f"{directory} exists and is not a directory.") from None
        if self.directory_permissions_mode is not None:
            # As Django does: os.makedirs() does not give parents the mode.
            for made in missing:
                os.chmod(made, self.directory_permissions_mode)
        return [os.path.dirname(path) for path in missing]

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """The folder's entries without writes in progress: they are no one's orphans yet.

        A part-file abandoned by a killed writer is listed, so that `verify_images`
        reports it as an orphan and `--delete-orphans` removes it.
        """
        directories, files = super().listdir(path)
        cutoff = time.time() - ABANDONED_AFTER_SECONDS
        folder = self.path(path)

        def in_progress(name: str) -> bool:
            if not (name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)):
                return False
            try:
                return os.stat(os.path.join(folder, name)).st_mtime >= cutoff
            except FileNotFoundError:
                return True  # renamed into place meanwhile: listed under its key next time

        return directories, [name for name in files if not in_progress(name)]

    def iter_chunks(self, key: str, chunk_size: int) -> Iterator[bytes]:
        with self.open(key, "rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def save_reporting_md5(self, key: str, path: Path, *, md5: str) -> None:
        """Write as `save` does; a disk reports no digest of what it holds (None)."""
        with path.open("rb") as fh:
            self.save(key, File(fh, name=key))

    def direct_url(self, key: str, *, download_name: str | None = None) -> str | None:
        """Local files have no URL of their own: the image route streams them."""
        return None

    def public_url(self, key: str) -> str | None:
        """None: a local file is reachable only through our own routes."""
        return None

    def internal_redirect(self, key: str) -> str | None:
        """Where nginx finds the object itself (X-Accel-Redirect), when it sends the bytes.

        Read at each request, as Django reads MEDIA_ROOT: the location is nginx's, set
        with STORAGE_LOCAL_ACCEL_REDIRECT, and aliases this storage's root.
        """
        location = settings.STORAGE_LOCAL_ACCEL_REDIRECT
        return f"{location}{key}" if location else None

    @staticmethod
    def is_not_found(exc: BaseException) -> bool:
        return isinstance(exc, FileNotFoundError)


def _fsync_folder(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
