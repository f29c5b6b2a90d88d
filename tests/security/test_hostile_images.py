"""A hostile image host: small files that would cost a worker far more memory than they weigh.

Each image is served over loopback by a host of our own and stored as a worker stores
it (`result_store_image`): refused with the reason recorded and nothing written, or
stored, and in either case within about 100 MB of a worker's memory. The memory is the
kernel's high-water mark of a worker process of its own (Pillow's buffers are C memory,
which tracemalloc does not see).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from PIL import Image

from generations.models import GenerationResult
from generations.services.derivatives import DerivativesOutcome, result_make_derivatives
from generations.services.storing import StoreOutcome, result_store_image
from tests.conftest import worker_environment
from tests.image_host import ImageHost

pytestmark = [pytest.mark.security, pytest.mark.django_db]

S = GenerationResult.StorageStatus
REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
# What one image may cost a worker, above what the worker holds when idle.
MEMORY_BUDGET_MIB = 100


# --- images made without ever holding their pixels ------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def solid_png(
    width: int, height: int, *, pixel: bytes = b"\xc8\x1e\x1e", bit_depth: int = 8, colour: int = 2
) -> bytes:
    """A real PNG of one colour, compressed row by row: a few hundred KB for 100 megapixels."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + pixel * width  # filter byte "none", then the pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def rgba16_png(width: int, height: int) -> bytes:
    """16 bits a channel, with alpha: the PNG that decodes to the most bytes a pixel."""
    return solid_png(
        width, height, pixel=struct.pack(">HHHH", 1000, 30000, 65535, 40000), bit_depth=16, colour=6
    )


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header (with a correct CRC) claims another size."""
    data = bytearray(solid_png(1, 1))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A 1x1 lossless WebP whose VP8L header claims another size (at most 16384 a side)."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1), "red").save(out, "WEBP", lossless=True)
    data = bytearray(out.getvalue())
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    (bits,) = struct.unpack("<I", data[21:25])
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | (height - 1) << 14
    data[21:25] = struct.pack("<I", bits)
    return bytes(data)


def png_with_chunk(kind: bytes, size: int) -> bytes:
    """A small PNG carrying one metadata chunk of `size` bytes before its pixels."""
    data = solid_png(64, 64)
    return data[:33] + _chunk(kind, b"\0" * size) + data[33:]


def png_with_text(chunks: int) -> bytes:
    """A small PNG whose zTXt chunks each inflate to 1 MB of text: kilobytes on the wire."""
    data = solid_png(64, 64)
    text = zlib.compress(b"a" * (1024 * 1024 - 16), 9)
    texts = b"".join(_chunk(b"zTXt", b"note%d\0\0" % i + text) for i in range(chunks))
    return data[:33] + texts + data[33:]


def webp_padded_to(size: int) -> bytes:
    """A small WebP padded with an unknown chunk: Pillow reads a WebP whole into memory."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(out, "WEBP", exif=b"Exif\0\0MM\0*\0\0\0\x08\0\0\0\0")
    body = out.getvalue()[12:]
    assert body[:4] == b"VP8X"
    padding = size - len(body) - 20
    body += b"zPAD" + struct.pack("<I", padding) + b"\0" * padding
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def progressive_jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    gradient = Image.linear_gradient("L").resize((width, height))
    Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient)).save(
        out, "JPEG", quality=90, progressive=True
    )
    return out.getvalue()


def lossless_webp(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((width, height), 60).convert("RGB").save(
        out, "WEBP", lossless=True, quality=0
    )
    return out.getvalue()


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_refused(result: GenerationResult, code: str, image_storage_root: Path) -> None:
    result.refresh_from_db()
    assert result.storage_status == S.FAILED
    assert result.storage_error.startswith(code), result.storage_error
    assert result.image_url == result.external_url  # the external URL is never lost
    assert result.params_used_json()["storageError"] == result.storage_error
    assert stored_files(image_storage_root) == []


# --- refused, from what the header claims ------------------------------------------------------


def test_the_default_pixel_limit_admits_seedream_and_refuses_10000x10000() -> None:
    # Seedream's largest outputs: 4096x4096, and 4K presets such as 6240x2656.
    assert max(4096 * 4096, 6240 * 2656, 4704 * 3520) <= django_settings.IMAGE_FETCH_MAX_PIXELS
    assert django_settings.IMAGE_FETCH_MAX_PIXELS < 10000 * 10000


def test_a_small_png_of_10000x10000_pixels_is_refused_and_nothing_is_written(
    image_host: ImageHost, image_storage_root: Path
) -> None:
    data = solid_png(10000, 10000)
    assert len(data) < 400 * 1024  # a third of a megabyte; 400 MB once decoded
    result = image_host.result_for("huge.png", data)

    assert result_store_image(result_id=result.pk, will_retry=True) is StoreOutcome.FAILED

    assert image_host.served == ["/huge.png"]
    assert_refused(result, "image_too_many_pixels", image_storage_root)
    assert "10000x10000" in result.storage_error


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("claims-9000x9000.png", lambda: png_claiming(9000, 9000)),
        ("claims-10000x10000.webp", lambda: webp_claiming(10000, 10000)),
        # Inside the pixel limit, but a WebP decodes only whole, at 16 bytes a pixel.
        ("claims-4096x4096.webp", lambda: webp_claiming(4096, 4096)),
    ],
)
def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(
    image_host: ImageHost, image_storage_root: Path, name: str, make: Any
) -> None:
    result = image_host.result_for(name, make())

    assert result_store_image(result_id=result.pk) is StoreOutcome.FAILED

    assert_refused(result, "image_too_many_pixels", image_storage_root)


def test_a_16_bit_rgba_png_just_under_the_limit_is_stored_and_one_row_more_is_refused(
    image_host: ImageHost, image_storage_root: Path
) -> None:
    # 4096x4150 and 4096x4151 straddle the default limit of 17,000,000 pixels.
    width, height = 4096, 4150
    under = image_host.result_for("under.png", rgba16_png(width, height))
    over = image_host.result_for("over.png", rgba16_png(width, height + 1))

    assert result_store_image(result_id=under.pk) is StoreOutcome.STORED
    assert result_make_derivatives(result_id=under.pk) is DerivativesOutcome.MADE
    under.refresh_from_db()
    assert (under.content_type, under.width, under.height) == ("image/png", width, height)
    with Image.open(image_storage_root / under.thumbnail_key) as thumbnail:
        assert (thumbnail.format, thumbnail.mode) == ("WEBP", "RGBA")
        assert max(thumbnail.size) == 512

    assert result_store_image(result_id=over.pk) is StoreOutcome.FAILED
    over.refresh_from_db()
    assert over.storage_status == S.FAILED
    assert over.storage_error.startswith("image_too_many_pixels"), over.storage_error
    assert stored_files(image_storage_root) == sorted([under.storage_key, under.thumbnail_key])


# --- refused, from what the bytes around the pixels would cost -------------------------------


@pytest.mark.parametrize(
    ("name", "make", "code"),
    [
        # 63 MB of text from a file of 70 KB, held while the pixels decode.
        ("text.png", lambda: png_with_text(63), "not_an_image"),
        # Pillow reads a metadata chunk whole, twice over.
        ("padded.png", lambda: png_with_chunk(b"zjNk", 9 * MiB), "image_too_large"),
        ("padded.webp", lambda: webp_padded_to(21 * MiB), "image_too_large"),
    ],
)
def test_an_image_padded_with_what_pillow_would_hold_in_memory_is_refused(
    image_host: ImageHost, image_storage_root: Path, name: str, make: Any, code: str
) -> None:
    result = image_host.result_for(name, make())

    assert result_store_image(result_id=result.pk) is StoreOutcome.FAILED

    assert_refused(result, code, image_storage_root)


# --- what storing one image costs a worker -------------------------------------------------

_WORKER = """
import gc, json, sys
from pathlib import Path
import django
django.setup()
from generations.models import GenerationResult
from generations.services.derivatives import result_make_derivatives
from generations.services.storing import result_store_image

def kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

warm_id, image_id = int(sys.argv[1]), int(sys.argv[2])
# Every import, Pillow plugin and connection in place: that is idle.
assert result_store_image(result_id=warm_id).value == "stored"
assert result_make_derivatives(result_id=warm_id).value == "made"
gc.collect()
Path("/proc/self/clear_refs").write_text("5")  # the high-water mark back to the current RSS
idle = kib("VmRSS")
outcome = result_store_image(result_id=image_id)
# The whole of what a worker does for it: the full decode and thumbnail come after.
if outcome.value == "stored":
    assert result_make_derivatives(result_id=image_id).value == "made"
peak = kib("VmHWM")
result = GenerationResult.objects.get(pk=image_id)
print(json.dumps({
    "outcome": outcome.value, "error": result.storage_error, "growth_mib": (peak - idle) / 1024
}))
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("name", "make", "outcome"),
    [
        ("10000x10000.png", lambda: solid_png(10000, 10000), "failed"),
        # The biggest PNG the default limit admits, in the mode that decodes the largest.
        ("rgba16-under-the-limit.png", lambda: rgba16_png(4096, 4150), "stored"),
        ("4096x4096-progressive.jpg", lambda: progressive_jpeg(4096, 4096), "stored"),
        ("2048x2048-lossless.webp", lambda: lossless_webp(2048, 2048), "stored"),
    ],
)
def test_storing_one_image_costs_a_worker_under_100_mb(
    image_host: ImageHost, settings: Any, tmp_path: Path, name: str, make: Any, outcome: str
) -> None:
    warm = image_host.result_for("warm.png", solid_png(640, 480))
    result = image_host.result_for(name, make())

    completed = subprocess.run(
        [sys.executable, "-c", _WORKER, str(warm.pk), str(result.pk)],
        cwd=REPO_ROOT,
        env=worker_environment(settings, GENVAULT_TEST_VAR_DIR=str(tmp_path / "worker-var")),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    assert measured["outcome"] == outcome, measured
    assert measured["growth_mib"] < MEMORY_BUDGET_MIB, measured
