"""Real images made by Pillow, and bytes that only pretend to be images.

Noise, so that each encoded file has real entropy data for a truncation to cut.
"""

from __future__ import annotations

import io

from PIL import Image


def noise_image_bytes(fmt: str, size: tuple[int, int], mode: str = "RGB", **save: object) -> bytes:
    noise = Image.effect_noise(size, 64).convert(mode)
    out = io.BytesIO()
    noise.save(out, format=fmt, **save)
    return out.getvalue()


def translucent_png(size: tuple[int, int]) -> bytes:
    image = Image.effect_noise(size, 64).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize(size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


JPEG = noise_image_bytes("JPEG", (640, 360), quality=90)
PNG = translucent_png((300, 200))
WEBP = noise_image_bytes("WEBP", (320, 240), quality=80)
GIF = noise_image_bytes("GIF", (32, 32), mode="P")
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'
