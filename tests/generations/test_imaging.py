"""Image checks and thumbnails on real files: the type from the bytes, pixel and memory
budgets from the header, whole files only, and small upright WebP thumbnails."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from generations import imaging
from generations.imaging import (
    ImageTooManyPixels,
    NotAnImage,
    check_image,
    inspect_and_thumbnail,
    inspect_image,
    render_thumbnail,
)
from tests.generations.sample_images import GIF, HTML, JPEG, PNG, SVG, WEBP, noise_image_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- inspecting a file --------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "content_type", "extension", "size"),
    [
        (JPEG, "image/jpeg", "jpg", (640, 360)),
        (PNG, "image/png", "png", (300, 200)),
        (WEBP, "image/webp", "webp", (320, 240)),
    ],
)
def test_inspect_image_reports_sniffed_type_and_size(tmp_path, data, content_type, extension, size):
    info = inspect_image(_write(tmp_path, "x.bin", data), max_pixels=10_000_000)

    assert (info.content_type, info.extension, (info.width, info.height)) == (
        content_type,
        extension,
        size,
    )


def test_the_type_comes_from_the_bytes_not_the_name(tmp_path):
    info = inspect_image(_write(tmp_path, "photo.jpg", PNG), max_pixels=10_000_000)

    assert (info.content_type, info.extension) == ("image/png", "png")


@pytest.mark.parametrize("data", [HTML, SVG], ids=["html", "svg"])
def test_html_and_svg_are_not_images(tmp_path, data):
    with pytest.raises(NotAnImage) as caught:
        inspect_image(_write(tmp_path, "x.bin", data), max_pixels=10_000_000)

    assert caught.value.code == "not_an_image"
    assert caught.value.transient is False


def _corrupt_png_crc(data: bytes) -> bytes:
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    crc_at = idat + 4 + length
    return data[:crc_at] + bytes([data[crc_at] ^ 0xFF]) + data[crc_at + 1 :]


@pytest.mark.parametrize(
    "data",
    [
        GIF,
        HTML,
        SVG,
        b"just some text\n",
        b"",
        JPEG[: len(JPEG) // 2],
        PNG[: len(PNG) // 2],
        _corrupt_png_crc(PNG),
        WEBP[: len(WEBP) // 2],
    ],
    ids=["gif", "html", "svg", "text", "empty", "cut-jpeg", "cut-png", "bad-crc-png", "cut-webp"],
)
def test_inspect_image_refuses_what_is_not_a_whole_jpeg_png_or_webp(tmp_path, data):
    with pytest.raises(NotAnImage):
        inspect_image(_write(tmp_path, "x.bin", data), max_pixels=10_000_000)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims another size: a decompression bomb's shape."""
    data = bytearray(noise_image_bytes("PNG", (1, 1)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [(30000, 30000, 100_000_000), (5000, 5000, 1_000_000), (300, 200, 59_999)],
)
def test_too_many_pixels_is_refused_from_the_header(tmp_path, width, height, max_pixels):
    data = PNG if (width, height) == (300, 200) else _png_claiming(width, height)
    path = _write(tmp_path, "bomb.png", data)

    with pytest.raises(ImageTooManyPixels) as caught:
        inspect_image(path, max_pixels=max_pixels)

    assert caught.value.code == "image_too_many_pixels"
    assert isinstance(caught.value, NotAnImage)


def test_progressive_jpeg_has_a_smaller_pixel_budget(tmp_path, monkeypatch):
    progressive = noise_image_bytes("JPEG", (640, 360), quality=90, progressive=True)
    monkeypatch.setattr(imaging, "PROGRESSIVE_JPEG_MAX_PIXELS", 640 * 360 - 1)

    with pytest.raises(ImageTooManyPixels):
        inspect_image(_write(tmp_path, "p.jpg", progressive), max_pixels=10_000_000)
    baseline = inspect_image(_write(tmp_path, "b.jpg", JPEG), max_pixels=10_000_000)

    assert baseline.width == 640


def _peak_memory_growth_mib(script: str) -> float:
    """Run `script` in a fresh interpreter; how far its peak RSS grew past the imports."""
    program = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "Image.init()\n"
        "from generations.imaging import inspect_image, render_thumbnail\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{script}\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps((after - before) / 1024))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_decompression_bomb_is_refused_without_using_memory(tmp_path):
    path = _write(tmp_path, "bomb.png", _png_claiming(30000, 30000))

    growth = _peak_memory_growth_mib(
        "from generations.imaging import ImageTooManyPixels\n"
        "try:\n"
        f"    inspect_image(Path({str(path)!r}), max_pixels=100_000_000)\n"
        "except ImageTooManyPixels:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('the bomb was accepted')"
    )

    assert growth < 16  # decoding it would take 2.7 GB


def test_large_jpeg_is_inspected_and_thumbnailed_at_reduced_scale(tmp_path):
    path = tmp_path / "large.jpg"
    Image.linear_gradient("L").resize((6000, 4000)).convert("RGB").save(path, quality=90)

    growth = _peak_memory_growth_mib(
        f"path = Path({str(path)!r})\n"
        "info = inspect_image(path, max_pixels=100_000_000)\n"
        "assert (info.width, info.height) == (6000, 4000), info\n"
        "thumb = render_thumbnail(path)\n"
        "assert len(thumb) > 0"
    )

    assert growth < 30  # a full-scale decode alone is 69 MiB


# --- the safe stage's checks: cheap, and no pixel decoded ------------------------------------


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding pixels fails the test: every format's decode ends in ImageFile.load."""

    def decode(self: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)


PROGRESSIVE_JPEG = noise_image_bytes("JPEG", (320, 180), quality=90, progressive=True)


@pytest.mark.parametrize(
    ("data", "content_type", "size"),
    [
        (JPEG, "image/jpeg", (640, 360)),
        (PROGRESSIVE_JPEG, "image/jpeg", (320, 180)),
        (PNG, "image/png", (300, 200)),
        (WEBP, "image/webp", (320, 240)),
    ],
    ids=["jpeg", "progressive-jpeg", "png", "webp"],
)
def test_check_image_knows_type_and_size_without_decoding_a_pixel(
    tmp_path, no_decoding, data, content_type, size
):
    info = check_image(_write(tmp_path, "x.bin", data), max_pixels=10_000_000)

    assert (info.content_type, (info.width, info.height)) == (content_type, size)


def test_the_no_decoding_guard_catches_a_decode(tmp_path, no_decoding):
    # What would make the test above pass vacuously: the guard must see a real decode.
    with pytest.raises(AssertionError, match="pixels were decoded"):
        inspect_image(_write(tmp_path, "x.jpg", JPEG), max_pixels=10_000_000)


@pytest.mark.parametrize(
    ("data", "cut"),
    [
        (JPEG, len(JPEG) // 2),
        (JPEG, len(JPEG) - 1),
        (PROGRESSIVE_JPEG, len(PROGRESSIVE_JPEG) - 2),
        (PNG, len(PNG) // 2),
        (PNG, len(PNG) - 12),  # exactly without its IEND chunk
        (WEBP, len(WEBP) // 2),
        (WEBP, len(WEBP) - 1),
    ],
    ids=[
        "jpeg-half",
        "jpeg-1",
        "progressive-jpeg-eoi",
        "png-half",
        "png-iend",
        "webp-half",
        "webp-1",
    ],
)
def test_check_image_refuses_a_file_cut_short(tmp_path, no_decoding, data, cut):
    with pytest.raises(NotAnImage) as caught:
        check_image(_write(tmp_path, "cut.bin", data[:cut]), max_pixels=10_000_000)

    assert caught.value.code == "not_an_image"


def test_a_webp_with_bytes_after_its_riff_length_is_refused(tmp_path, no_decoding):
    with pytest.raises(NotAnImage):
        check_image(_write(tmp_path, "x.webp", WEBP + b"\0\0"), max_pixels=10_000_000)


@pytest.mark.parametrize(
    "data",
    [GIF, HTML, SVG, b"just some text\n", b"", _corrupt_png_crc(PNG)],
    ids=["gif", "html", "svg", "text", "empty", "bad-crc-png"],
)
def test_check_image_refuses_what_is_not_a_jpeg_png_or_webp(tmp_path, no_decoding, data):
    with pytest.raises(NotAnImage):
        check_image(_write(tmp_path, "x.bin", data), max_pixels=10_000_000)


def test_check_image_refuses_too_many_pixels_from_the_header(tmp_path, no_decoding):
    with pytest.raises(ImageTooManyPixels):
        check_image(_write(tmp_path, "bomb.png", _png_claiming(30000, 30000)), max_pixels=10**8)


def _png_with_garbled_pixels(data: bytes) -> bytes:
    """The PNG with its first IDAT's compressed pixels overwritten, CRC made to match."""
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    body = bytearray(data[idat + 4 : idat + 4 + length])
    body[2 : 2 + 64] = b"\xff" * 64  # past the zlib header: deflate data no decoder takes
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
    return data[: idat + 4] + bytes(body) + crc + data[idat + 8 + length :]


def test_what_check_image_cannot_see_the_full_decode_refuses(tmp_path):
    # Every chunk whole and CRC-checked, but its pixels do not inflate: only decoding shows it.
    path = _write(tmp_path, "garbled.png", _png_with_garbled_pixels(PNG))

    assert check_image(path, max_pixels=10_000_000).content_type == "image/png"
    with pytest.raises(NotAnImage):
        inspect_and_thumbnail(path, max_pixels=10_000_000)


# --- thumbnails -------------------------------------------------------------------------------


def _open_thumbnail(data: bytes) -> Image.Image:
    thumbnail = Image.open(io.BytesIO(data))
    assert thumbnail.format == "WEBP"
    return thumbnail


@pytest.mark.parametrize(
    ("data", "expected_size", "mode"),
    [(JPEG, (512, 288), "RGB"), (PNG, (300, 200), "RGBA"), (WEBP, (320, 240), "RGB")],
)
def test_thumbnail_is_a_small_webp_keeping_the_aspect(tmp_path, data, expected_size, mode):
    thumbnail = _open_thumbnail(render_thumbnail(_write(tmp_path, "x.bin", data)))

    assert thumbnail.size == expected_size
    assert thumbnail.mode == mode


def test_thumbnail_respects_max_side(tmp_path):
    thumbnail = _open_thumbnail(render_thumbnail(_write(tmp_path, "x.jpg", JPEG), max_side=64))

    assert max(thumbnail.size) == 64
    assert thumbnail.size == (64, 36)


def test_thumbnail_is_turned_upright_by_exif_orientation(tmp_path):
    landscape = Image.new("RGB", (640, 320), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was held on its side: display rotated 90 degrees
    out = io.BytesIO()
    landscape.save(out, format="JPEG", exif=exif)

    thumbnail = _open_thumbnail(render_thumbnail(_write(tmp_path, "side.jpg", out.getvalue())))

    assert thumbnail.size == (256, 512)


def test_thumbnail_of_a_non_image_is_refused(tmp_path):
    with pytest.raises(NotAnImage):
        render_thumbnail(_write(tmp_path, "page.html", HTML))


def test_inspect_and_thumbnail_decodes_a_jpeg_once_and_still_catches_truncation(
    tmp_path: Path,
) -> None:
    image = Image.new("RGB", (1600, 900), (30, 120, 200))
    whole = tmp_path / "whole.jpg"
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright it is 900 wide, 1600 high
    image.save(buffer, "JPEG", quality=90, exif=exif)
    whole.write_bytes(buffer.getvalue())
    info, thumbnail = inspect_and_thumbnail(whole, max_pixels=10_000_000, max_side=480)
    assert (info.content_type, info.width, info.height) == ("image/jpeg", 1600, 900)
    with Image.open(io.BytesIO(thumbnail)) as thumb:
        assert thumb.format == "WEBP"
        assert thumb.size == (270, 480)

    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(NotAnImage):
        inspect_and_thumbnail(cut, max_pixels=10_000_000)
