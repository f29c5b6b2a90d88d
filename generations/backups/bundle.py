"""The backup bundle: what it holds, and how one is read and checked before anything is written.

A bundle is the export JSON (`version`, `exportedAt`, `prompts`, `models`,
`generations` with their `results` nested, each with its `favorite` and `tags` names;
`tags` and `shares`), with every field needed to restore each row under its id (bundles
written before stars, tags and share links have none of those keys, and import as
results without them); as a ZIP it adds `manifest.json` (key -> SHA-256 and size) and the
objects under `images/<key>`.

A bundle is read as a stranger's: the JSON's size is bounded before it is parsed,
every entry name must be one we write, every URL one we would link, every key one
made from its row's id, and an image's bytes must match the manifest (its size
checked from the ZIP's header and again while it inflates).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.utils.dateparse import parse_datetime

from storage_backends import images as image_storage

from ..checks import UnsafeUrl, checked_external_url, parse_id
from ..models import (
    COLUMN_PARAM_KEYS,
    GenerationResult,
    InvalidTagName,
    Share,
    clean_tag_name,
    not_stored_fields,
)

EXPORT_VERSION = 1
EXPORT_NAME = "export.json"
MANIFEST_NAME = "manifest.json"
IMAGES_DIR = "images/"
CHUNK_SIZE = 1024 * 1024
# export.json (or a plain JSON export) is parsed whole, so its size is bounded first:
# 512 MiB holds some 400,000 results, and parsing it takes a few GB of memory.
MAX_JSON_BYTES = 512 * 1024 * 1024
# What reading a damaged or hostile ZIP may raise, besides our own refusals.
ZIP_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,  # a compression method zipfile does not know
    RuntimeError,  # an encrypted entry
)

S = GenerationResult.StorageStatus

# The columns of a result that a bundle carries as they are, each under its key; the
# export renders the others (ids, the URLs, paramsUsed) itself.
RESULT_COLUMN_KEYS = {
    "image_index": "imageIndex",
    "status": "status",
    "error_code": "errorCode",
    "error_message": "errorMessage",
    "external_url_expires_at": "externalImageUrlExpiresAt",
    "storage_status": "storageStatus",
    "storage_backend": "storageBackend",
    "storage_key": "storageKey",
    "thumbnail_key": "thumbnailKey",
    "content_type": "contentType",
    "byte_size": "byteSize",
    "sha256": "sha256",
    "width": "width",
    "height": "height",
    "storage_attempts": "storageAttempts",
    "storage_error": "storageError",
    "stored_at": "storedAt",
    "created_at": "createdAt",
}


class BundleRefused(Exception):
    """The bundle cannot be imported; nothing was written."""


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def parse_time(value: Any) -> datetime | None:
    return parse_datetime(value) if value else None


def mark_not_stored(result: dict[str, Any], *, reason: str) -> None:
    """Make a bundled result one with no stored image, by the rule a row follows
    (`not_stored_fields`): its bytes are not in the bundle, or not in storage, and it
    is re-stored later from its external URL."""
    for column, value in not_stored_fields(status=S.PENDING.value, error=reason).items():
        if column in RESULT_COLUMN_KEYS:
            result[RESULT_COLUMN_KEYS[column]] = value
    result["imageUrl"] = result.get("externalImageUrl") or ""
    params = result.get("paramsUsed")
    if isinstance(params, dict):
        params["storageError"] = reason  # paramsUsed shows the column, as the export renders it


def params_and_columns(result: dict[str, Any]) -> dict[str, Any]:
    """A bundled result's `params_used`, `external_url` and `storage_error` columns.

    Every bundle carries the external URL and the storage error twice: as the result's
    own keys and, for older readers, inside paramsUsed (bundles written while
    params_used kept copies of them hold what it kept). The columns take the result's
    own keys, else the copies; params_used keeps no copy.
    """
    params = result.get("paramsUsed") or {}
    copies: dict[str, Any] = params if isinstance(params, dict) else {}
    if isinstance(params, dict):
        params = {k: v for k, v in params.items() if k not in COLUMN_PARAM_KEYS}
    return {
        "params_used": params,
        "external_url": _key_or_copy(result, copies, "externalImageUrl"),
        "storage_error": _key_or_copy(result, copies, "storageError"),
    }


def _key_or_copy(result: dict[str, Any], copies: dict[str, Any], key: str) -> Any:
    copy = copies.get(key)
    return result.get(key) or (copy if isinstance(copy, str) else "")


# --- reading -----------------------------------------------------------------------


def _show(value: object) -> str:
    """A value from the bundle in a refusal: quoted, and short enough for one line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_entry_name(name: str) -> None:
    if (
        name.startswith(("/", "\\"))
        or "\\" in name
        or ".." in name.split("/")
        or re.match(r"^[A-Za-z]:", name)
        or "\0" in name
    ):
        raise BundleRefused(f"refused: the archive holds an unsafe entry name {_show(name)}")
    if name in (EXPORT_NAME, MANIFEST_NAME):
        return
    if name.startswith(IMAGES_DIR):
        key = name[len(IMAGES_DIR) :]
        if image_storage.parse_key(key) is not None:
            return
    raise BundleRefused(f"refused: the archive holds an entry that is not ours: {_show(name)}")


def _parse_json(raw: bytes, name: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise BundleRefused(f"refused: {name} is nested too deeply to be an export") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BundleRefused(f"refused: {name} is not valid JSON ({exc})") from None


def _read_json_entry(archive: zipfile.ZipFile, name: str) -> Any:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise BundleRefused(f"refused: the archive has no {name}") from None
    if info.file_size > MAX_JSON_BYTES:
        raise BundleRefused(f"refused: {name} is larger than {MAX_JSON_BYTES} bytes")
    try:
        with archive.open(info) as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)  # a header may lie: the read is bounded too
    except ZIP_READ_ERRORS as exc:
        raise BundleRefused(f"refused: {name} cannot be read from the archive ({exc})") from None
    if len(raw) > MAX_JSON_BYTES:
        raise BundleRefused(f"refused: {name} is larger than {MAX_JSON_BYTES} bytes")
    return _parse_json(raw, name)


def _checked_manifest(manifest: Any) -> dict[str, dict[str, Any]]:
    images = manifest.get("images") if isinstance(manifest, dict) else None
    if not isinstance(images, dict):
        raise BundleRefused("refused: manifest.json has no 'images' object")
    for key, entry in images.items():
        if not (
            isinstance(entry, dict)
            and _is_count(entry.get("size"))
            and isinstance(entry.get("sha256"), str)
        ):
            raise BundleRefused(f"refused: manifest.json has a malformed entry for {_show(key)}")
    return images


@dataclass
class Bundle:
    """An opened bundle: its export JSON and, for a ZIP, the archive and its manifest."""

    data: dict[str, Any]
    archive: zipfile.ZipFile | None = None
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()

    def extract_image(self, *, key: str, dest: Path) -> None:
        """Copy one entry to `dest`, refusing it unless its bytes match the manifest.

        The size is checked from the entry's header before anything is read, and again
        while copying: a ZIP's header can lie, and a small entry can inflate to gigabytes.
        """
        assert self.archive is not None
        expected = self.manifest[key]
        name = IMAGES_DIR + key
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise BundleRefused(
                f"refused: {key} is in the manifest but not in the archive"
            ) from None
        size_limit = int(expected["size"])
        if info.file_size != size_limit:
            raise BundleRefused(
                f"refused: {key} declares {info.file_size} bytes, its manifest says {size_limit}"
            )
        digest = hashlib.sha256()
        size = 0
        try:
            with self.archive.open(info) as entry, dest.open("wb") as out:
                while chunk := entry.read(CHUNK_SIZE):
                    size += len(chunk)
                    if size > size_limit:
                        raise BundleRefused(f"refused: {key} is larger than its manifest says")
                    digest.update(chunk)
                    out.write(chunk)
        except ZIP_READ_ERRORS as exc:
            raise BundleRefused(f"refused: {key} cannot be read from the archive ({exc})") from None
        if size != size_limit or digest.hexdigest() != expected["sha256"]:
            raise BundleRefused(f"refused: {key} does not match its SHA-256 in the manifest")


def open_bundle(path: Path) -> Bundle:
    """Open a ZIP or JSON bundle, refusing entries that are not ours and JSON too large to parse."""
    if not path.is_file():
        raise BundleRefused(f"no such file: {path}")
    if zipfile.is_zipfile(path):
        try:
            archive = zipfile.ZipFile(path)
        except ZIP_READ_ERRORS as exc:
            raise BundleRefused(f"refused: {path} is not a readable ZIP ({exc})") from None
        try:
            names = [info.filename for info in archive.infolist()]
            for name in names:
                _check_entry_name(name)
            if len(set(names)) != len(names):
                raise BundleRefused("refused: the archive holds the same entry twice")
            manifest = _checked_manifest(_read_json_entry(archive, MANIFEST_NAME))
            return Bundle(
                data=_read_json_entry(archive, EXPORT_NAME), archive=archive, manifest=manifest
            )
        except BaseException:
            archive.close()
            raise
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise BundleRefused(
            f"refused: {path} is neither a ZIP nor a JSON export of at most {MAX_JSON_BYTES} bytes"
        )
    with path.open("rb") as fh:
        raw = fh.read(MAX_JSON_BYTES + 1)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BundleRefused(f"refused: {path} is nested too deeply to be an export") from None
    except ValueError as exc:
        raise BundleRefused(f"refused: {path} is neither a ZIP nor valid JSON ({exc})") from None
    return Bundle(data=data)


# --- checking ----------------------------------------------------------------------


def _is_id(value: object) -> bool:
    return isinstance(value, int) and parse_id(value) is not None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_url(url: object, what: str) -> None:
    try:
        checked_external_url(url)
    except UnsafeUrl as exc:
        raise BundleRefused(f"refused: {what} is not a URL we keep: {exc}") from None


def _check_result(result: dict[str, Any]) -> None:
    """The URLs a result carries, and the keys and type a stored one names."""
    result_id = result["id"]
    external = result.get("externalImageUrl") or ""
    if external:
        _check_url(external, f"result {result_id}'s externalImageUrl")
    params = result.get("paramsUsed")
    if isinstance(params, dict) and params.get("externalImageUrl"):
        _check_url(params["externalImageUrl"], f"result {result_id}'s paramsUsed.externalImageUrl")
    if result.get("storageStatus") != S.STORED:
        # Not stored: its imageUrl is its external URL (a stored one gets its stable URL).
        if (result.get("imageUrl") or "") not in ("", external):
            raise BundleRefused(f"refused: result {result_id}'s imageUrl is not its external URL")
        return
    key = result.get("storageKey")
    named = image_storage.parse_key(key) if isinstance(key, str) else None
    if named is None or named.is_thumbnail or named.result_id != result_id:
        raise BundleRefused(
            f"refused: result {result_id} has a storage key not made from its id: {_show(key)}"
        )
    thumb = result.get("thumbnailKey") or ""
    if thumb and thumb != image_storage.thumbnail_key(result_id=result_id):
        raise BundleRefused(
            f"refused: result {result_id} has a foreign thumbnail key {_show(thumb)}"
        )
    if result.get("contentType") != image_storage.CONTENT_TYPES[named.extension]:
        raise BundleRefused(
            f"refused: result {result_id} is stored as {_show(result.get('contentType'))} "
            f"under {key}"
        )
    if not _is_count(result.get("byteSize")):
        raise BundleRefused(f"refused: result {result_id} is stored without a byte size")


_SHARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{8,32}")


def _check_tag_name(name: object, what: str) -> None:
    try:
        clean_tag_name(name)
    except InvalidTagName as exc:
        raise BundleRefused(f"refused: {what} has a tag we would not keep: {exc.message}") from None


def _check_organizing(data: dict[str, Any]) -> None:
    """Stars, tags and shares, when the bundle has them (older ones do not)."""
    for generation in data["generations"]:
        for result in generation["results"]:
            if not isinstance(result.get("favorite", False), bool):
                raise BundleRefused(f"refused: result {result['id']}'s favorite is not true/false")
            names = result.get("tags", [])
            if not isinstance(names, list):
                raise BundleRefused(f"refused: result {result['id']}'s tags are not a list")
            for name in names:
                _check_tag_name(name, f"result {result['id']}")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
        raise BundleRefused("refused: the export's 'tags' is not a list of tags")
    for tag in tags:
        _check_tag_name(tag.get("name"), "the export's 'tags'")
    shares = data.get("shares", [])
    if not isinstance(shares, list):
        raise BundleRefused("refused: the export's 'shares' is not a list")
    for share in shares:
        if not isinstance(share, dict) or not _is_id(share.get("id")):
            raise BundleRefused("refused: the export's 'shares' holds an item with no id")
        share_id = share["id"]
        key = share.get("key")
        if not isinstance(key, str) or not _SHARE_KEY_RE.fullmatch(key):
            raise BundleRefused(f"refused: share {share_id} has no key we would make")
        if share.get("kind") not in Share.Kind.values:
            raise BundleRefused(f"refused: share {share_id} shares {_show(share.get('kind'))}")
        ids = share.get("resultIds")
        if not isinstance(ids, list) or not all(_is_id(i) for i in ids):
            raise BundleRefused(f"refused: share {share_id}'s resultIds are not result ids")
        for moment in ("createdAt", "expiresAt", "revokedAt"):
            value = share.get(moment)
            if value is None and moment != "expiresAt":
                continue
            try:
                valid = isinstance(value, str) and parse_datetime(value) is not None
            except ValueError:
                valid = False
            if not valid:
                raise BundleRefused(f"refused: share {share_id}'s {moment} is not a time")


def check_export(data: Any) -> None:
    """Refuse an export whose shape, URLs or keys we would not have written ourselves."""
    if not isinstance(data, dict) or data.get("version") != EXPORT_VERSION:
        raise BundleRefused(f"refused: not a genvault export of version {EXPORT_VERSION}")
    for name in ("prompts", "models", "generations"):
        items = data.get(name)
        if not isinstance(items, list):
            raise BundleRefused(f"refused: the export has no '{name}' list")
        for item in items:
            if not isinstance(item, dict) or not _is_id(item.get("id")):
                raise BundleRefused(f"refused: the export's '{name}' holds an item with no id")
    for generation in data["generations"]:
        generation_id = generation["id"]
        if not isinstance(generation.get("prompt"), str):
            raise BundleRefused(f"refused: generation {generation_id} has no prompt")
        reference = generation.get("referenceImageUrl") or ""
        if reference and not (isinstance(reference, str) and reference.startswith("data:image/")):
            _check_url(reference, f"generation {generation_id}'s referenceImageUrl")
        results = generation.setdefault("results", [])
        if not isinstance(results, list):
            raise BundleRefused(f"refused: generation {generation_id}'s results are not a list")
        for result in results:
            if not isinstance(result, dict) or not _is_id(result.get("id")):
                raise BundleRefused(
                    f"refused: generation {generation_id} holds a result with no id"
                )
            _check_result(result)
    _check_organizing(data)
