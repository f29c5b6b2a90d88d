"""The local backend: an object is whole at its key and on disk before `save` returns."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.files import File
from django.core.management import CommandError, call_command

from storage_backends.backends.local import ABANDONED_AFTER_SECONDS, LocalImageStorage
from storage_backends.images import (
    StorageUnavailable,
    image_storage,
    iter_keys,
    save_object_bytes,
)
from tests.factories import jpeg_bytes


class BreaksOff(io.RawIOBase):
    """A source that hands out `good` bytes, then fails like a dropped connection."""

    def __init__(self, good: bytes) -> None:
        self.good = good
        self.sent = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.sent:
            raise ConnectionResetError("the source broke off")
        self.sent = True
        buffer[: len(self.good)] = self.good
        return len(self.good)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_saved_object_is_whole_at_its_key_with_nothing_else_left(
    image_storage_root: Path,
) -> None:
    data = jpeg_bytes(64, 48)
    save_object_bytes(backend="local", key="generations/7.jpg", data=data)

    assert (image_storage_root / "generations/7.jpg").read_bytes() == data
    assert files_under(image_storage_root) == ["generations/7.jpg"]


def test_saving_the_same_key_again_replaces_the_object(image_storage_root: Path) -> None:
    save_object_bytes(backend="local", key="generations/7.jpg", data=b"old bytes")
    save_object_bytes(backend="local", key="generations/7.jpg", data=b"new bytes")

    assert (image_storage_root / "generations/7.jpg").read_bytes() == b"new bytes"
    assert files_under(image_storage_root) == ["generations/7.jpg"]


def test_a_source_that_breaks_off_leaves_no_part_file_and_the_old_object_whole(
    image_storage_root: Path,
) -> None:
    storage = image_storage("local")
    with pytest.raises(ConnectionResetError):
        storage.save("generations/8.jpg", File(io.BufferedReader(BreaksOff(b"\xff\xd8" * 10))))
    assert files_under(image_storage_root) == []

    save_object_bytes(backend="local", key="generations/8.jpg", data=b"the good image")
    with pytest.raises(ConnectionResetError):
        storage.save("generations/8.jpg", File(io.BufferedReader(BreaksOff(b"\xff\xd8" * 10))))
    assert (image_storage_root / "generations/8.jpg").read_bytes() == b"the good image"
    assert files_under(image_storage_root) == ["generations/8.jpg"]


def test_a_full_disk_at_the_rename_leaves_no_part_file(
    image_storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(StorageUnavailable, match="No space"):
        save_object_bytes(backend="local", key="thumbnails/9.webp", data=b"RIFF....WEBP")
    assert files_under(image_storage_root) == []


def test_the_file_then_its_folder_reach_the_disk_before_save_returns(
    image_storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a power cut right after `save` would find depends on these fsyncs (the OS edge)."""
    final = image_storage_root / "generations/10.png"
    synced: list[tuple[int, bool]] = []  # (inode, whether the key held the object yet)
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, final.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_object_bytes(backend="local", key="generations/10.png", data=b"\x89PNG whole")

    file_inode = final.stat().st_ino
    folder_inode = final.parent.stat().st_ino
    root_inode = image_storage_root.stat().st_ino
    # The file's bytes before it takes its name, the folder's entry once it has it; the
    # folder was made for this object, so its own entry in the root is flushed too.
    assert synced[0] == (file_inode, False)
    assert (folder_inode, True) in synced[1:]
    assert (root_inode, True) in synced[1:]

    synced.clear()
    save_object_bytes(backend="local", key="generations/11.png", data=b"\x89PNG again")
    assert [inode for inode, _ in synced] == [
        (image_storage_root / "generations/11.png").stat().st_ino,
        folder_inode,
    ]


def test_objects_keep_the_permissions_django_gives_files(
    image_storage_root: Path, settings: Any
) -> None:
    """A web server sending the files itself (X-Accel-Redirect) must be able to read them."""
    umask = os.umask(0o022)
    os.umask(umask)
    save_object_bytes(backend="local", key="generations/12.jpg", data=b"bytes")
    mode = (image_storage_root / "generations/12.jpg").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask

    strict = LocalImageStorage(location=str(image_storage_root), file_permissions_mode=0o640)
    strict.save("generations/13.jpg", File(io.BytesIO(b"bytes")))
    assert (image_storage_root / "generations/13.jpg").stat().st_mode & 0o777 == 0o640


@pytest.mark.django_db
def test_a_write_in_progress_is_no_orphan_but_one_its_killed_writer_left_is(
    image_storage_root: Path,
) -> None:
    save_object_bytes(backend="local", key="generations/14.jpg", data=b"x")
    in_progress = image_storage_root / "generations/.14.jpg.0123456789abcdef.tmp"
    in_progress.write_bytes(b"half an ima")
    assert list(iter_keys(backend="local")) == ["generations/14.jpg"]

    abandoned = time.time() - ABANDONED_AFTER_SECONDS - 60
    os.utime(in_progress, (abandoned, abandoned))
    assert sorted(iter_keys(backend="local")) == [
        "generations/.14.jpg.0123456789abcdef.tmp",
        "generations/14.jpg",
    ]
    with pytest.raises(CommandError):
        call_command("verify_images", "--delete-orphans", stdout=io.StringIO())
    assert not in_progress.exists()
