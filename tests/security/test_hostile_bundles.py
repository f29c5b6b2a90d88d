"""A backup made by a stranger: `import_backup` reads every bundle as a hostile one.

Each bundle here is written by hand, byte by byte where a ZIP's header must lie,
the way an attacker would write it. Every refusal is one line and a non-zero exit,
and leaves no row and no object behind: the storage folder is checked each time.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from PIL import Image, ImageFile

from generations.models import Generation, GenerationResult, Prompt
from generations.services.derivatives import DerivativesOutcome, result_make_derivatives
from tests.factories import GenerationFactory, GenerationResultFactory, jpeg_bytes, png_bytes
from tests.generations.sample_images import PNG as SAMPLE_PNG
from tests.generations.sample_images import WEBP
from tests.generations.services.test_derivatives import png_with_garbled_pixels
from tests.test_settings import manage

pytestmark = [pytest.mark.security, pytest.mark.django_db]

MiB = 1024 * 1024
SEEDREAM_4 = "doubao-seedream-4-0-250828"
JSON_BOUND = 512 * MiB
PNG = png_bytes(64, 48)
JPEG = jpeg_bytes(640, 480)


# --- writing bundles ---------------------------------------------------------------


@dataclass
class Entry:
    """One ZIP entry: `prefix`, then `filler` `repeat` times, then `suffix`.

    The deflate stream is built from one compressed copy of the filler (after a full
    flush the compressor's state is reset, so every copy compresses to the same
    bytes): a 128 MiB entry costs a millisecond and a few hundred KB.
    `declared_size` is what both headers claim; `crc_of` how many bytes the CRC covers.
    """

    name: str
    prefix: bytes = b""
    filler: bytes = b""
    repeat: int = 0
    suffix: bytes = b""
    declared_size: int | None = None
    crc_of: int | None = None

    @property
    def size(self) -> int:
        return len(self.prefix) + len(self.filler) * self.repeat + len(self.suffix)

    def pieces(self, limit: int | None = None) -> Any:
        left = self.size if limit is None else limit
        for piece in [self.prefix, *([self.filler] * self.repeat), self.suffix]:
            if left <= 0:
                return
            yield piece[:left]
            left -= len(piece)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for piece in self.pieces():
            digest.update(piece)
        return digest.hexdigest()

    def deflated(self) -> tuple[bytes, int]:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts = [compressor.compress(self.prefix), compressor.flush(zlib.Z_FULL_FLUSH)]
        if self.repeat:
            block = compressor.compress(self.filler) + compressor.flush(zlib.Z_FULL_FLUSH)
            parts += [block] * self.repeat
        parts += [compressor.compress(self.suffix), compressor.flush()]
        crc = 0
        for piece in self.pieces(self.crc_of):
            crc = zlib.crc32(piece, crc)
        return b"".join(parts), crc


def write_zip(path: Path, entries: list[Entry]) -> Path:
    """A ZIP written field by field, so that its sizes say whatever the entry says."""
    out = io.BytesIO()
    central = []
    for entry in entries:
        data, crc = entry.deflated()
        declared = entry.size if entry.declared_size is None else entry.declared_size
        name = entry.name.encode()
        offset = out.tell()
        fields = (20, 0, 8, 0, 0x21, crc, len(data), declared, len(name))
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name + data)
        central.append(
            struct.pack("<IH", 0x02014B50, 20)
            + struct.pack("<HHHHHIIIHHHHHII", *fields, 0, 0, 0, 0, 0o644 << 16, offset)
            + name
        )
    start = out.tell()
    directory = b"".join(central)
    out.write(directory)
    out.write(
        struct.pack(
            "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(directory), start, 0
        )
    )
    path.write_bytes(out.getvalue())
    return path


def generation(
    results: list[dict[str, Any]], *, generation_id: int = 1, prompt: str = "a red fox in snow"
) -> dict[str, Any]:
    return {
        "id": generation_id,
        "promptId": None,
        "prompt": prompt,
        "size": "1024x1024",
        "params": {},
        "referenceImageUrl": "",
        "referenceResultId": None,
        "createdBy": None,
        "createdAt": "2025-05-01T10:00:00+00:00",
        "results": results,
    }


def pending_result(result_id: int = 1, **fields: Any) -> dict[str, Any]:
    url = f"https://images.example.test/{result_id}.jpeg"
    result = {
        "id": result_id,
        "modelId": None,
        "model": SEEDREAM_4,
        "imageIndex": 0,
        "status": "success",
        "errorCode": "",
        "errorMessage": "",
        "imageUrl": url,
        "externalImageUrl": url,
        "externalImageUrlExpiresAt": None,
        "paramsUsed": {"seed": 1, "externalImageUrl": url},
        "paramsOverride": {},
        "storageStatus": "pending",
        "storageBackend": "",
        "storageKey": "",
        "thumbnailKey": "",
        "contentType": "",
        "byteSize": None,
        "sha256": "",
        "width": None,
        "height": None,
        "storageAttempts": 0,
        "storageError": "",
        "storedAt": None,
        "createdAt": "2025-05-01T10:00:01+00:00",
    }
    result.update(fields)
    return result


def stored_result(
    object_entry: Entry, *, result_id: int = 1, thumbnail: bool = True, **fields: Any
) -> dict[str, Any]:
    """A stored row naming the object in `object_entry`, which must sit at its own key."""
    key = object_entry.name.removeprefix("images/")
    extension = key.rsplit(".", 1)[1]
    content_type = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[extension]
    size = object_entry.size if object_entry.declared_size is None else object_entry.declared_size
    result = pending_result(
        result_id,
        imageUrl=f"/api/images/{result_id}",
        storageStatus="stored",
        storageBackend="local",
        storageKey=key,
        thumbnailKey=f"thumbnails/{result_id}.webp" if thumbnail else "",
        contentType=content_type,
        byteSize=size,
        sha256=object_entry.sha256(),
        width=64,
        height=48,
        storageAttempts=1,
        storedAt="2025-05-01T10:00:05+00:00",
    )
    result.update(fields)
    return result


def export(generations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "exportedAt": "2025-05-02T00:00:00+00:00",
        "prompts": [],
        "models": [],
        "generations": generations,
    }


def write_bundle(
    path: Path, data: dict[str, Any], objects: list[Entry], *, manifest: Any = None
) -> Path:
    """A ZIP bundle: `objects`, a manifest of what they claim to be, and export.json."""
    if manifest is None:
        manifest = {
            "version": 1,
            "images": {
                entry.name.removeprefix("images/"): {
                    "sha256": entry.sha256(),
                    "size": entry.size if entry.declared_size is None else entry.declared_size,
                }
                for entry in objects
            },
        }
    return write_zip(
        path,
        [
            *objects,
            Entry("manifest.json", prefix=json.dumps(manifest).encode()),
            Entry("export.json", prefix=json.dumps(data).encode()),
        ],
    )


def one_image_bundle(path: Path, entry: Entry, **fields: Any) -> Path:
    return write_bundle(path, export([generation([stored_result(entry, **fields)])]), [entry])


# --- what a refusal looks like -------------------------------------------------------


def files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def refused(bundle: Path, *args: str) -> str:
    """Run the import, which must refuse with one line; return that line."""
    with pytest.raises(CommandError) as caught:
        call_command(
            "import_backup", str(bundle), *args, stdout=io.StringIO(), stderr=io.StringIO()
        )
    message = str(caught.value)
    assert "\n" not in message and message.startswith("refused"), message
    return message


def assert_nothing_imported(root: Path) -> None:
    assert not GenerationResult.objects.exists()
    assert not Generation.objects.exists()
    assert not Prompt.objects.exists()
    assert files(root) == []


# --- class: objects that are not images we store --------------------------------------


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The attack as it was seen: 128 KB on disk, a 128 MiB "PNG" of zeros inside."""
    entry = Entry("images/generations/1.png", filler=bytes(MiB), repeat=128)
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    return one_image_bundle(path, entry, thumbnail=False)


def test_a_zip_bomb_is_refused_from_its_header(zip_bomb: Path, image_storage_root: Path) -> None:
    assert zip_bomb.stat().st_size < 192 * 1024

    message = refused(zip_bomb)

    assert "134217728 bytes" in message and "IMAGE_FETCH_MAX_BYTES" in message
    assert_nothing_imported(image_storage_root)


@pytest.mark.parametrize(
    "entry",
    [
        # The header promises 40 MiB, the manifest and the row 1 MiB, which is all there is.
        Entry("images/generations/1.png", filler=bytes(MiB), repeat=1, declared_size=40 * MiB),
        # Header, CRC, manifest and row all say 1 MiB; the stream goes on for 128 MiB.
        Entry(
            "images/generations/1.png",
            filler=bytes(MiB),
            repeat=128,
            declared_size=MiB,
            crc_of=MiB,
        ),
    ],
    ids=["declares-more-than-it-holds", "inflates-past-its-declared-size"],
)
def test_an_entry_whose_declared_size_lies_is_refused(
    tmp_path: Path, image_storage_root: Path, entry: Entry
) -> None:
    sha = hashlib.sha256(bytes(MiB)).hexdigest()  # the first MiB: what a reader that stops gets
    row = stored_result(entry, thumbnail=False, byteSize=MiB, sha256=sha)
    manifest = {"version": 1, "images": {"generations/1.png": {"sha256": sha, "size": MiB}}}
    bundle = write_bundle(
        tmp_path / "liar.zip", export([generation([row])]), [entry], manifest=manifest
    )

    message = refused(bundle)

    assert "generations/1.png" in message
    assert_nothing_imported(image_storage_root)


def _pixel_bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (15000, 15000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("key", "data", "with_thumbnail"),
    [
        ("generations/1.jpg", b"<!doctype html><script>alert(document.domain)</script>", False),
        (
            "generations/1.png",
            b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
            True,
        ),
        ("generations/1.png", PNG[: len(PNG) // 2], True),  # truncated inside its pixels
        ("generations/1.jpg", JPEG[: len(JPEG) // 2], False),  # a truncated JPEG
        ("generations/1.jpg", png_bytes(64, 48), False),  # a PNG under a JPEG's key
        ("generations/1.png", _pixel_bomb(), False),  # 225 megapixels in a small file
    ],
    ids=["html", "svg", "truncated-png", "truncated-jpeg", "png-as-jpeg", "pixel-bomb"],
)
def test_an_object_that_is_not_an_image_we_store_is_refused(
    tmp_path: Path, image_storage_root: Path, key: str, data: bytes, with_thumbnail: bool
) -> None:
    entry = Entry(f"images/{key}", prefix=data)
    objects = [entry]
    if with_thumbnail:
        objects.append(Entry("images/thumbnails/1.webp", prefix=b"RIFF\0\0\0\0WEBPVP8 "))
    bundle = write_bundle(
        tmp_path / "bundle.zip", export([generation([stored_result(entry)])]), objects
    )

    message = refused(bundle)

    assert "result 1" in message and key in message
    assert_nothing_imported(image_storage_root)


def test_the_row_records_what_the_bytes_are_and_the_thumbnail_is_made_from_them(
    tmp_path: Path, image_storage_root: Path
) -> None:
    image = Entry("images/generations/1.png", prefix=png_bytes(64, 48))
    hostile_thumbnail = Entry("images/thumbnails/1.webp", prefix=b"<html><script>1</script>")
    data = export([generation([stored_result(image, width=9999, height=1)])])
    bundle = write_bundle(tmp_path / "bundle.zip", data, [image, hostile_thumbnail])

    call_command("import_backup", str(bundle), stdout=io.StringIO(), stderr=io.StringIO())

    row = GenerationResult.objects.get(pk=1)
    assert (row.content_type, row.width, row.height) == ("image/png", 64, 48)
    assert (image_storage_root / "generations/1.png").read_bytes() == image.prefix
    assert not (image_storage_root / "thumbnails/1.webp").exists()  # the bundle's never is
    assert result_make_derivatives(result_id=1) is DerivativesOutcome.MADE
    with Image.open(image_storage_root / "thumbnails/1.webp") as thumbnail:
        assert thumbnail.format == "WEBP" and thumbnail.size == (64, 48)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding pixels fails the test: every format's decode ends in ImageFile.load."""

    def decode(self: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)


@pytest.mark.parametrize(
    ("key", "data"),
    [("generations/1.jpg", JPEG), ("generations/1.png", PNG), ("generations/1.webp", WEBP)],
    ids=["jpeg", "png", "webp"],
)
def test_an_import_decodes_no_pixel_and_stores_each_image_without_its_thumbnail(
    tmp_path: Path, image_storage_root: Path, no_decoding: None, key: str, data: bytes
) -> None:
    entry = Entry(f"images/{key}", prefix=data)
    bundle = one_image_bundle(tmp_path / "bundle.zip", entry, thumbnail=True)

    out = io.StringIO()
    call_command("import_backup", str(bundle), stdout=out, stderr=io.StringIO())

    assert "images 1, thumbnails queued 1" in out.getvalue()
    row = GenerationResult.objects.get(pk=1)
    assert (row.storage_status, row.thumbnail_key, row.has_thumbnail) == ("stored", "", False)
    assert files(image_storage_root) == [image_storage_root / key]
    assert (image_storage_root / key).read_bytes() == data


def test_a_bundle_image_whose_pixels_do_not_decode_is_unstored_at_the_derivatives_stage(
    tmp_path: Path, image_storage_root: Path
) -> None:
    """Whole by its chunks and CRCs, so the import keeps it; the full decode then finds
    the pixels broken, as it would for an image just fetched: the object goes, and the
    row waits `pending` on its external URL."""
    entry = Entry("images/generations/1.png", prefix=png_with_garbled_pixels(SAMPLE_PNG))
    bundle = one_image_bundle(tmp_path / "bundle.zip", entry, thumbnail=False)

    call_command("import_backup", str(bundle), stdout=io.StringIO(), stderr=io.StringIO())
    assert GenerationResult.objects.get(pk=1).storage_status == "stored"

    assert result_make_derivatives(result_id=1) is DerivativesOutcome.UNSTORED

    row = GenerationResult.objects.get(pk=1)
    assert row.storage_status == "pending"
    assert row.storage_error.startswith("not_an_image"), row.storage_error
    assert row.image_url == row.external_url == "https://images.example.test/1.jpeg"
    assert files(image_storage_root) == []


def test_a_stored_row_of_a_json_bundle_cannot_claim_to_be_html(
    tmp_path: Path, image_storage_root: Path
) -> None:
    """A JSON bundle keeps objects already in storage: their type must be their key's."""
    entry = Entry("images/generations/1.jpg", prefix=jpeg_bytes())
    data = export([generation([stored_result(entry, contentType="text/html")])])
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(data))

    message = refused(bundle)

    assert "result 1" in message and "text/html" in message
    assert_nothing_imported(image_storage_root)


def test_the_command_line_gets_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    """What an operator sees in a shell: the refusal, no traceback."""
    entry = Entry("images/generations/1.jpg", prefix=b"<html><body>not a photo</body></html>")
    bundle = one_image_bundle(tmp_path / "bundle.zip", entry, thumbnail=True)
    media = tmp_path / "media-cli"
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "GENVAULT_VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(media),
    }

    assert manage("migrate", "--verbosity", "0", **env).returncode == 0
    completed = manage("import_backup", str(bundle), "--verbosity", "0", **env)

    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "generations/1.jpg is not an image" in lines[0], completed.stderr
    assert not media.exists() or files(media) == []


# --- class: a merge that would file results under a stranger's generation --------------


def test_a_merge_never_files_a_result_under_a_generation_with_another_prompt(
    tmp_path: Path, image_storage_root: Path
) -> None:
    ours = GenerationFactory(prompt_text="our own lighthouse")
    GenerationResultFactory(generation=ours)
    before = files(image_storage_root)
    entry = Entry("images/generations/9001.jpg", prefix=jpeg_bytes())
    theirs = generation(
        [stored_result(entry, result_id=9001)], generation_id=ours.pk, prompt="a stranger's cat"
    )
    bundle = write_bundle(tmp_path / "theirs.zip", export([theirs]), [entry])

    message = refused(bundle, "--merge")

    assert f"generation {ours.pk}" in message
    assert not GenerationResult.objects.filter(pk=9001).exists()
    assert list(ours.results.values_list("pk", flat=True)) != [9001]
    assert files(image_storage_root) == before


@pytest.mark.parametrize("same_prompt", [True, False], ids=["same-prompt", "other-prompt"])
def test_a_merge_refuses_a_result_id_we_hold_under_another_generation(
    tmp_path: Path, image_storage_root: Path, same_prompt: bool
) -> None:
    ours = GenerationResultFactory(generation=GenerationFactory(prompt_text="a red fox in snow"))
    other_id = ours.generation_id + 1
    prompt = "a red fox in snow" if same_prompt else "a stranger's cat"
    bundle = tmp_path / "theirs.json"
    bundle.write_text(
        json.dumps(
            export([generation([pending_result(ours.pk)], generation_id=other_id, prompt=prompt)])
        )
    )

    message = refused(bundle, "--merge")

    assert f"result {ours.pk}" in message
    assert not Generation.objects.filter(pk=other_id).exists()
    assert GenerationResult.objects.get(pk=ours.pk).generation_id == ours.generation_id


def test_a_merge_still_adds_a_new_result_to_the_same_generation(tmp_path: Path) -> None:
    """The control: a merge of our own later backup is not refused."""
    ours = GenerationFactory(prompt_text="a red fox in snow")
    bundle = tmp_path / "later.json"
    bundle.write_text(
        json.dumps(export([generation([pending_result(4242)], generation_id=ours.pk)]))
    )

    call_command("import_backup", str(bundle), "--merge", stdout=io.StringIO())

    assert GenerationResult.objects.get(pk=4242).generation_id == ours.pk


# --- class: the JSON, bounded before it is parsed, and of the shape we write -----------


def _padded_export() -> tuple[bytes, bytes, bytes]:
    """A valid, empty export with 513 MiB of blanks inside: over the bound."""
    head = b'{"version": 1, "prompts": [], "models": [], "generations": [], "pad": "'
    return head, b" " * MiB, b'"}'


def test_an_export_json_over_the_bound_is_refused_before_it_is_parsed(
    tmp_path: Path, image_storage_root: Path
) -> None:
    head, filler, tail = _padded_export()
    manifest = Entry("manifest.json", prefix=b'{"version": 1, "images": {}}')
    big = Entry("export.json", prefix=head, filler=filler, repeat=513, suffix=tail)
    bundle = write_zip(tmp_path / "big.zip", [manifest, big])
    assert bundle.stat().st_size < 2 * MiB

    message = refused(bundle)

    assert f"export.json is larger than {JSON_BOUND} bytes" in message
    assert_nothing_imported(image_storage_root)


def test_a_manifest_over_the_bound_is_refused_before_it_is_parsed(
    tmp_path: Path, image_storage_root: Path
) -> None:
    head = b'{"version": 1, "images": {}, "pad": "'
    big = Entry("manifest.json", prefix=head, filler=b" " * MiB, repeat=513, suffix=b'"}')
    bundle = write_zip(
        tmp_path / "big.zip", [big, Entry("export.json", prefix=json.dumps(export([])).encode())]
    )

    message = refused(bundle)

    assert f"manifest.json is larger than {JSON_BOUND} bytes" in message
    assert_nothing_imported(image_storage_root)


def test_a_plain_json_export_over_the_bound_is_refused_before_it_is_read(
    tmp_path: Path, image_storage_root: Path
) -> None:
    head, filler, tail = _padded_export()
    bundle = tmp_path / "big.json"
    with bundle.open("wb") as out:
        out.write(head)
        for _ in range(513):
            out.write(filler)
        out.write(tail)

    message = refused(bundle)

    assert str(JSON_BOUND) in message
    assert_nothing_imported(image_storage_root)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"version": 1, "prompts": [], "models": [], "generations": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        b'{"version": 1, "prompts": [], "models": [], "generations": [5]}',
        b'{"version": 1, "prompts": [], "models": [], '
        b'"generations": [{"id": 1, "prompt": "a fox", "results": "x"}]}',
        b'{"version": 1, "prompts": [], "models": [], "generations": [{"id": [1], "prompt": ""}]}',
        b'{"version": 1, "prompts": ["a lighthouse"], "models": [], "generations": []}',
    ],
    ids=[
        "nested-array",
        "nested-generations",
        "generation-not-an-object",
        "results-not-a-list",
        "id-not-a-number",
        "prompt-not-an-object",
    ],
)
@pytest.mark.parametrize("container", ["json", "zip"])
def test_an_export_of_the_wrong_shape_gets_one_line(
    tmp_path: Path, image_storage_root: Path, payload: bytes, container: str
) -> None:
    if container == "json":
        bundle = tmp_path / "odd.json"
        bundle.write_bytes(payload)
    else:
        manifest = Entry("manifest.json", prefix=b'{"version": 1, "images": {}}')
        bundle = write_zip(tmp_path / "odd.zip", [manifest, Entry("export.json", prefix=payload)])

    refused(bundle)

    assert_nothing_imported(image_storage_root)


def test_a_manifest_entry_that_is_not_an_object_gets_one_line(
    tmp_path: Path, image_storage_root: Path
) -> None:
    entry = Entry("images/generations/1.jpg", prefix=jpeg_bytes())
    bundle = write_bundle(
        tmp_path / "bundle.zip",
        export([generation([stored_result(entry)])]),
        [entry],
        manifest={"version": 1, "images": {"generations/1.jpg": "junk"}},
    )

    assert "manifest.json" in refused(bundle)
    assert_nothing_imported(image_storage_root)


# --- class: links a bundle carries ----------------------------------------------------


@pytest.mark.parametrize(
    ("where", "url"),
    [
        ("externalImageUrl", "javascript:alert(document.domain)"),
        ("externalImageUrl", "data:text/html,<script>alert(document.domain)</script>"),
        ("externalImageUrl", "http://not-allowed.example.test/1.png"),
        ("externalImageUrl", "JavaScript:alert(1)//https://images.example.test/"),
        ("externalImageUrl", "https://user:secret@images.example.test/1.png"),
        ("imageUrl", "javascript:alert(document.domain)"),
        ("paramsUsed", "javascript:alert(document.domain)"),
        ("referenceImageUrl", "javascript:alert(document.domain)"),
    ],
)
def test_a_bundle_carrying_a_link_we_would_not_follow_is_refused(
    tmp_path: Path, image_storage_root: Path, where: str, url: str
) -> None:
    result = pending_result(7)
    item = generation([result])
    if where == "paramsUsed":
        result["paramsUsed"]["externalImageUrl"] = url
    elif where == "referenceImageUrl":
        item["referenceImageUrl"] = url
    elif where == "imageUrl":
        result["imageUrl"] = url
    else:
        result["externalImageUrl"] = result["imageUrl"] = url
        result["paramsUsed"]["externalImageUrl"] = url
    bundle = tmp_path / "links.json"
    bundle.write_text(json.dumps(export([item])))

    message = refused(bundle)

    assert where in message
    assert url not in message
    assert_nothing_imported(image_storage_root)


def test_a_zip_bundle_with_an_unsafe_link_writes_no_object(
    tmp_path: Path, image_storage_root: Path
) -> None:
    entry = Entry("images/generations/1.jpg", prefix=jpeg_bytes())
    row = stored_result(entry, externalImageUrl="javascript:alert(document.domain)")
    row["paramsUsed"]["externalImageUrl"] = row["externalImageUrl"]
    bundle = write_bundle(tmp_path / "bundle.zip", export([generation([row])]), [entry])

    assert "result 1's externalImageUrl" in refused(bundle)
    assert_nothing_imported(image_storage_root)
