"""Checking that a file is an image we keep, and making its thumbnail, with Pillow.

The bytes come from the outside (an image host, a backup bundle), so nothing here trusts
a header or a file name: the type is sniffed, the header is checked against pixel and
memory budgets before anything is decoded, and a decode never builds a full-resolution
picture we could not afford.
"""

from __future__ import annotations

import contextlib
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, PngImagePlugin

from storage_backends.images import IMAGE_EXTENSIONS

# Pillow's default; a stray True elsewhere would let a truncated JPEG pass as whole.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow keeps a PNG's text chunks in memory, decompressed, while it decodes the pixels:
# by default up to 64 MB of them, which a PNG of a few hundred KB can hold. Text is not
# what an image is kept for; more than this is refused as not an image.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024

_CHUNK_SIZE = 64 * 1024


# What one image may cost a worker to decode stays under about 100 MB: the pixel limit
# (settings) bounds a PNG, whose full decode is 4 bytes a pixel, and two formats that cost
# more get budgets of their own.
# A progressive JPEG's decoder keeps every DCT coefficient of the full picture in memory
# (about 3 bytes a pixel) whatever the draft scale: 4096x4096, the largest size Seedream
# renders, costs about 50 MB.
PROGRESSIVE_JPEG_MAX_PIXELS = 4096 * 4096
# Pillow decodes a WebP only whole, through libwebp's animation decoder: its two canvases,
# the frame copied out of them and the image made from that copy hold 16 bytes a pixel
# at once (a 4096x4096 WebP would cost 256 MB), beside a copy of the whole file. Seedream
# never sends WebP; 2048x2048 costs 64 MB, and a lossless one of noise is 16 MB.
WEBP_MAX_PIXELS = 2048 * 2048
WEBP_MAX_BYTES = 20 * 1024 * 1024
# Pillow reads a PNG's other chunks whole, and twice over while it joins the pieces; pixel
# data (IDAT, and fdAT for animation frames) it streams. A PNG may not hide megabytes in
# its metadata.
PNG_MAX_METADATA_CHUNK = 8 * 1024 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_PNG_PIXEL_CHUNKS = (b"IDAT", b"fdAT")
# A Seedream 2K image (2048 px) decodes at 1/4 scale to exactly this: no resize step,
# and sharp on a high-density screen in the gallery's cards.
THUMBNAIL_MAX_SIDE = 512
# A decoded image is converted and reduced towards the thumbnail in tiles of about this
# many pixels a side, so that its decode stays the only full-size buffer (see _reduced).
_TILE_SIDE = 1024
# As Image.thumbnail's: the reduce by a whole factor leaves at least twice the thumbnail's
# size for the final LANCZOS step, which keeps the thumbnail as sharp as a fair resize.
_REDUCING_GAP = 2.0

_PILLOW_FORMATS = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # a JPEG with extra frames; Pillow names it apart
    "PNG": "image/png",
    "WEBP": "image/webp",
}
# What Image.open may try: MPO files come through the JPEG opener.
_OPENED_FORMATS = ["JPEG", "PNG", "WEBP"]
# Decoding errors Pillow raises for files that are not what their header promises.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
_JPEG_FORMATS = ("JPEG", "MPO")


class ImageRefused(Exception):
    """The bytes are not an image we keep; `code` is recorded with the message.

    Never worth another try: the same bytes fail the same way.
    """

    code: str = "image_refused"
    transient: bool = False


class NotAnImage(ImageRefused):
    """The bytes are not a whole JPEG, PNG or WebP."""

    code = "not_an_image"


class ImageTooManyPixels(NotAnImage):
    """More pixels than we decode: refused from the header, before any decoding."""

    code = "image_too_many_pixels"


class ImageTooCostly(ImageRefused):
    """A part Pillow would read whole into memory (a WebP file, a PNG's metadata chunk)
    is over its own budget, although the file is within the download's byte limit."""

    code = "image_too_large"


@dataclass
class ImageInfo:
    content_type: str
    extension: str
    width: int
    height: int


@contextlib.contextmanager
def _pillow_errors() -> Iterator[None]:
    """Pillow's ways of saying "not an image we take" as our ImageRefused errors."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooManyPixels(str(exc)) from exc
    except ImageRefused:
        raise
    except Image.UnidentifiedImageError as exc:
        raise NotAnImage("not a JPEG, PNG or WebP image") from exc
    except _DECODE_ERRORS as exc:
        raise NotAnImage(f"the image does not decode: {exc}") from exc


def _check_container(path: Path) -> None:
    """Checks on the raw bytes, before Pillow reads anything it would hold in memory.

    A PNG's every chunk and CRC (what Pillow's `verify()` checks, without reading a
    chunk whole), and a WebP's size, which Pillow reads whole into memory.
    """
    with path.open("rb") as fh:
        head = fh.read(12)
        if head.startswith(_PNG_SIGNATURE):
            fh.seek(len(_PNG_SIGNATURE))
            _check_png_chunks(fh)
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            size = path.stat().st_size
            if size > WEBP_MAX_BYTES:
                raise ImageTooCostly(
                    f"a WebP of {size} bytes is over the limit of {WEBP_MAX_BYTES} bytes"
                )


def _check_png_chunks(fh: BinaryIO) -> None:
    while True:
        header = fh.read(8)
        if len(header) < 8:
            raise NotAnImage("the PNG ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", header)
        name = kind.decode("latin-1")
        if kind not in _PNG_PIXEL_CHUNKS and length > PNG_MAX_METADATA_CHUNK:
            raise ImageTooCostly(
                f"the PNG's {name!r} chunk of {length} bytes is over the limit of "
                f"{PNG_MAX_METADATA_CHUNK} bytes"
            )
        crc = zlib.crc32(kind)
        remaining = length
        while remaining:
            piece = fh.read(min(remaining, _CHUNK_SIZE))
            if not piece:
                raise NotAnImage(f"the PNG ends inside its {name!r} chunk")
            crc = zlib.crc32(piece, crc)
            remaining -= len(piece)
        stored = fh.read(4)
        if len(stored) < 4 or struct.unpack(">I", stored)[0] != crc:
            raise NotAnImage(f"the PNG's {name!r} chunk fails its CRC")
        if kind == b"IEND":
            return


def _checked_header(image: Image.Image, *, max_pixels: int | None) -> ImageInfo:
    """What the header says, refused before decoding when it claims too much."""
    content_type = _PILLOW_FORMATS[str(image.format)]
    extension = IMAGE_EXTENSIONS[content_type]
    width, height = image.size
    if width <= 0 or height <= 0:
        raise NotAnImage(f"the image claims {width}x{height} pixels")
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooManyPixels(f"{width}x{height} is over the limit of {max_pixels} pixels")
    if (
        image.format in _JPEG_FORMATS
        and image.info.get("progressive")
        and pixels > PROGRESSIVE_JPEG_MAX_PIXELS
    ):
        raise ImageTooManyPixels(
            f"a progressive JPEG of {width}x{height} is over the limit of "
            f"{PROGRESSIVE_JPEG_MAX_PIXELS} pixels"
        )
    if image.format == "WEBP" and pixels > WEBP_MAX_PIXELS:
        raise ImageTooManyPixels(
            f"a WebP of {width}x{height} is over the limit of {WEBP_MAX_PIXELS} pixels"
        )
    return ImageInfo(content_type=content_type, extension=extension, width=width, height=height)


def check_image(path: Path, *, max_pixels: int) -> ImageInfo:
    """The checks that make a file safe to keep, at a few milliseconds of CPU: no pixel
    is decoded.

    The type from the magic bytes; the header, opened by Pillow, within the pixel and
    memory budgets; and the file complete by its format's own rule (a JPEG ends with
    its EOI marker, a PNG's chunks run whole and CRC-checked to IEND, a WebP is as
    long as its RIFF header says). Whether every pixel decodes is `inspect_and_thumbnail`'s
    question, asked later, off the path that makes the image safe.
    """
    with _pillow_errors():
        _check_container(path)
        _check_complete(path)
        with Image.open(path, formats=_OPENED_FORMATS) as image:
            return _checked_header(image, max_pixels=max_pixels)


def _check_complete(path: Path) -> None:
    """Refuse a JPEG or WebP cut short, from its last bytes or its length alone.

    A PNG is checked whole by `_check_container`; anything else is not an image we take.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if head.startswith(_PNG_SIGNATURE):
            return
        if head.startswith(_JPEG_SIGNATURE):
            fh.seek(max(0, size - 2))
            if fh.read(2) != _JPEG_EOI:
                raise NotAnImage("the JPEG does not end with its EOI marker: it was cut short")
            return
        if len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            (riff_length,) = struct.unpack("<I", head[4:8])
            if riff_length + 8 != size:
                raise NotAnImage(
                    f"the WebP's RIFF header says {riff_length + 8} bytes, the file has {size}"
                )
            return
    raise NotAnImage("not a JPEG, PNG or WebP image")


def inspect_image(path: Path, *, max_pixels: int) -> ImageInfo:
    """Sniff and fully verify a fetched file; its type comes from its bytes, not a header."""
    with _pillow_errors():
        _check_container(path)
        with Image.open(path, formats=_OPENED_FORMATS) as image:
            info = _checked_header(image, max_pixels=max_pixels)
            if image.format != "PNG":  # a PNG's chunks and CRCs are checked, never decoded
                if image.format in _JPEG_FORMATS:
                    # A reduced-scale decode still reads every scan, so truncation shows.
                    image.draft("RGB", (max(1, info.width // 8), max(1, info.height // 8)))
                image.load()
    return info


def render_thumbnail(
    path: Path, *, max_side: int = THUMBNAIL_MAX_SIDE, max_pixels: int | None = None
) -> bytes:
    """A small WebP of the image, upright, decoding a JPEG at the smallest scale that will do.

    The checks that bound what decoding costs always apply; `max_pixels` too when given.
    """
    with _pillow_errors():
        _check_container(path)
        return _thumbnail_of_checked(path, max_side=max_side, max_pixels=max_pixels)


def _thumbnail_of_checked(path: Path, *, max_side: int, max_pixels: int | None) -> bytes:
    with Image.open(path, formats=_OPENED_FORMATS) as image:
        _checked_header(image, max_pixels=max_pixels)
        if image.format in _JPEG_FORMATS:
            image.draft("RGB", _thumbnail_size(image.size, max_side))
        return _encode_thumbnail(image, max_side=max_side)


def inspect_and_thumbnail(
    path: Path, *, max_pixels: int, max_side: int = THUMBNAIL_MAX_SIDE
) -> tuple[ImageInfo, bytes]:
    """`inspect_image` and `render_thumbnail` with one decode.

    A JPEG decoded at the thumbnail's reduced scale still reads every scan, and a WebP
    or a PNG decodes only whole, so the decode that makes the thumbnail also proves
    the file whole (a PNG's CRCs are checked before, on the raw bytes).
    """
    with _pillow_errors():
        _check_container(path)
        with Image.open(path, formats=_OPENED_FORMATS) as image:
            info = _checked_header(image, max_pixels=max_pixels)
            if image.format in _JPEG_FORMATS:
                image.draft("RGB", _thumbnail_size(image.size, max_side))
            image.load()
            return info, _encode_thumbnail(image, max_side=max_side)


# EXIF orientation -> the transpose that makes the image upright (as ImageOps does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _thumbnail_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _reduced(image: Image.Image, *, mode: str, max_side: int) -> Image.Image:
    """`image` in `mode`, reduced by whole factors towards the thumbnail, a tile at a time.

    `convert()` and `reduce()` each copy their whole input (`reduce()` of RGBA through a
    premultiplied copy): on a decoded 4096x4096 PNG, another 64 MB apiece. Done on tiles
    whose sides are multiples of the factors, the result is the same and the decode
    stays the only full-size buffer, whatever the image's shape.
    """
    width, height = image.size
    target_width, target_height = _thumbnail_size(image.size, max_side)
    factor_x = max(1, int(width / target_width / _REDUCING_GAP))
    factor_y = max(1, int(height / target_height / _REDUCING_GAP))
    image.load()
    if factor_x == 1 and factor_y == 1:
        # Nothing to reduce (a JPEG drafted near the thumbnail's size, a small image):
        # the tiles would only copy it, and a whole copy of it is no larger.
        return image if image.mode == mode else image.convert(mode)
    tile_width = factor_x * max(1, _TILE_SIDE // factor_x)
    tile_height = factor_y * max(1, _TILE_SIDE // factor_y)
    reduced = Image.new(mode, (-(-width // factor_x), -(-height // factor_y)))
    for top in range(0, height, tile_height):
        for left in range(0, width, tile_width):
            tile = image.crop(
                (left, top, min(width, left + tile_width), min(height, top + tile_height))
            )
            if tile.mode != mode:
                tile = tile.convert(mode)
            if factor_x > 1 or factor_y > 1:
                tile = tile.reduce((factor_x, factor_y))
            reduced.paste(tile, (left // factor_x, top // factor_y))
    return reduced


def _encode_thumbnail(image: Image.Image, *, max_side: int) -> bytes:
    """Shrink, then turn upright (cheap on the small image), then encode as WebP."""
    orientation = image.getexif().get(0x0112, 1)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    thumbnail = _reduced(image, mode="RGBA" if has_alpha else "RGB", max_side=max_side)
    if max(thumbnail.size) > max_side:
        thumbnail.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if orientation in _UPRIGHT:
        thumbnail = thumbnail.transpose(_UPRIGHT[orientation])
    output = BytesIO()
    # method 0, the encoder's fastest: 2-3x less CPU than its default 4 for a few KB
    # more on a 512 px thumbnail (measured by bench/, see the README's Performance).
    thumbnail.save(output, format="WEBP", quality=80, method=0)
    return output.getvalue()
