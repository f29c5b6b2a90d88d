"""Which sizes each model takes, and the presets the generate form offers it.

Ark refuses a size outside a model's rules only after the call was made, with one
``InvalidParameter`` for the whole request. We check first, against the rules kept on
each ImageModel, so that the person asking is told which model refuses which size and
what it takes instead. The presets are Ark's own recommended width and height for each
aspect ratio at each resolution, from its image generation API reference.

Nothing here touches the database: the rules come in as a ``SizeRules``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

ADAPTIVE = "adaptive"
# Ark's resolution labels: the model picks the shape (from the prompt) at about that size.
RESOLUTIONS = ("1K", "2K", "3K", "4K")
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9")
# Ark's recommended width and height per resolution and aspect ratio (the tables of the
# image generation API reference; Seedream 3.0's own table is the 1K row).
PRESET_SIZES: dict[str, dict[str, str]] = {
    "1K": {
        "1:1": "1024x1024",
        "4:3": "1152x864",
        "3:4": "864x1152",
        "16:9": "1280x720",
        "9:16": "720x1280",
        "3:2": "1248x832",
        "2:3": "832x1248",
        "21:9": "1512x648",
    },
    "2K": {
        "1:1": "2048x2048",
        "4:3": "2304x1728",
        "3:4": "1728x2304",
        "16:9": "2848x1600",
        "9:16": "1600x2848",
        "3:2": "2496x1664",
        "2:3": "1664x2496",
        "21:9": "3136x1344",
    },
    "3K": {
        "1:1": "3072x3072",
        "4:3": "3456x2592",
        "3:4": "2592x3456",
        "16:9": "4096x2304",
        "9:16": "2304x4096",
        "3:2": "3744x2496",
        "2:3": "2496x3744",
        "21:9": "4704x2016",
    },
    "4K": {
        "1:1": "4096x4096",
        "4:3": "4704x3520",
        "3:4": "3520x4704",
        "16:9": "5504x3040",
        "9:16": "3040x5504",
        "3:2": "4992x3328",
        "2:3": "3328x4992",
        "21:9": "6240x2656",
    },
}
# Whatever a model's rules, no side outside this range is sent: the largest Ark takes is
# 16,777,216 pixels at an aspect ratio of 16, 16384 x 1024.
MIN_SIDE, MAX_SIDE = 64, 16384
_SIZE_RE = re.compile(r"(\d{1,6})\s*[xX]\s*(\d{1,6})")


class SizeRefused(ValueError):
    """A size that is malformed, or that a model does not take; the message says why."""


@dataclass(frozen=True)
class SizeRules:
    """What sizes one model takes. ``None`` for a bound: no limit of that kind.

    The demo upstream keeps Ark's rules in this same shape (``as_dict``).
    """

    labels: tuple[str, ...] = ()
    adaptive: bool = False
    width_height: bool = True
    min_pixels: int | None = None
    max_pixels: int | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None
    min_side: int | None = None
    max_side: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SizeRules:
        return cls(**{**dict(data), "labels": tuple(data.get("labels") or ())})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}

    def describe(self) -> str:
        """What this model takes, in words: "2K or 4K, or WIDTHxHEIGHT of ..."."""
        choices = [_either(list(self.labels))] if self.labels else []
        if self.adaptive:
            choices.append("adaptive (the shape of the reference image)")
        if self.width_height:
            choices.append("WIDTHxHEIGHT" + self._width_height_rules())
        if not choices:
            return "no size: leave the size to the model"
        if len(choices) == 1 and not self.width_height:
            return "only " + choices[0]
        return ", or ".join(choices)

    def _width_height_rules(self) -> str:
        parts = []
        low, high = self.min_pixels, self.max_pixels
        if low is not None and high is not None:
            parts.append(f" of {low:,} to {high:,} pixels")
        elif low is not None:
            parts.append(f" of at least {low:,} pixels")
        elif high is not None:
            parts.append(f" of at most {high:,} pixels")
        if self.min_side is not None or self.max_side is not None:
            parts.append(" with each side " + _range(self.min_side, self.max_side, "pixels"))
        if self.min_aspect_ratio is not None or self.max_aspect_ratio is not None:
            low_ratio = _ratio(self.min_aspect_ratio) if self.min_aspect_ratio else None
            high_ratio = _ratio(self.max_aspect_ratio) if self.max_aspect_ratio else None
            joiner = " and" if self.min_side is not None or self.max_side is not None else " with"
            parts.append(f"{joiner} an aspect ratio {_range(low_ratio, high_ratio, '')}".rstrip())
        return "".join(parts)

    def refusal(self, size: str) -> str | None:
        """Why this model does not take ``size`` (already normalized), or None if it does."""
        if size == ADAPTIVE:
            return None if self.adaptive else ""
        if size in RESOLUTIONS:
            return None if size in self.labels else ""
        if not self.width_height:
            return ""
        width, height = dimensions(size)
        pixels = width * height
        if self.min_pixels is not None and pixels < self.min_pixels:
            return f"{pixels:,} pixels, fewer than {self.min_pixels:,}"
        if self.max_pixels is not None and pixels > self.max_pixels:
            return f"{pixels:,} pixels, more than {self.max_pixels:,}"
        for side in (width, height):
            if self.min_side is not None and side < self.min_side:
                return f"a side of {side}, shorter than {self.min_side}"
            if self.max_side is not None and side > self.max_side:
                return f"a side of {side}, longer than {self.max_side}"
        aspect = width / height
        too_narrow = self.min_aspect_ratio is not None and aspect < self.min_aspect_ratio
        too_wide = self.max_aspect_ratio is not None and aspect > self.max_aspect_ratio
        if too_narrow or too_wide:
            return f"an aspect ratio of {_ratio(aspect)}"
        return None

    def takes(self, size: str) -> bool:
        return self.refusal(size) is None


@dataclass(frozen=True)
class Preset:
    """One size to offer: a resolution label, adaptive, or a recommended WIDTHxHEIGHT."""

    size: str
    resolution: str = ""
    aspect_ratio: str = ""

    @property
    def label(self) -> str:
        if self.size == ADAPTIVE:
            return "Adaptive (the shape of the reference image)"
        if not self.aspect_ratio:
            return f"{self.size}: the model picks the shape from the prompt"
        width, height = dimensions(self.size)
        return f"{width} x {height} ({self.aspect_ratio})"


def normalize_size(size: Any) -> str:
    """``size`` in the one spelling we send: ``2K``, ``adaptive`` or ``2048x2048``.

    Raises SizeRefused for anything that is none of them, or has a side outside
    ``MIN_SIDE``-``MAX_SIDE`` (whatever the model, no such size is sent).
    """
    if not isinstance(size, str):
        raise SizeRefused("size must be a string such as '2K' or '2048x2048'")
    text = size.strip()
    if text.upper() in RESOLUTIONS:
        return text.upper()
    if text.lower() == ADAPTIVE:
        return ADAPTIVE
    match = _SIZE_RE.fullmatch(text)
    if not match:
        shown = text if len(text) <= 40 else text[:39] + "…"
        raise SizeRefused(f"size {shown!r} is not 1K, 2K, 3K, 4K, adaptive or WIDTHxHEIGHT")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise SizeRefused(f"each side must be {MIN_SIDE} to {MAX_SIDE} pixels")
    return f"{width}x{height}"


def dimensions(size: str) -> tuple[int, int]:
    """Width and height of a normalized ``WxH`` size."""
    width, _, height = size.partition("x")
    return int(width), int(height)


def check_size(size: Any, rules: SizeRules, *, model_name: str) -> str:
    """``size`` normalized, if the model takes it; SizeRefused naming the model otherwise."""
    normalized = normalize_size(size)
    reason = rules.refusal(normalized)
    if reason is None:
        return normalized
    because = f" ({reason})" if reason else ""
    raise SizeRefused(
        f"{model_name} does not take {normalized}{because}: it takes {rules.describe()}"
    )


def presets(rules: SizeRules) -> list[tuple[str, list[Preset]]]:
    """What to offer a model, grouped by resolution: each label it takes, then Ark's
    recommended sizes at that resolution that it takes.

    A model without labels (Seedream 3.0) is offered the resolutions whose every
    recommended size it takes; a model that takes adaptive is offered it first.
    """
    groups: list[tuple[str, list[Preset]]] = []
    if rules.adaptive:
        groups.append(("", [Preset(size=ADAPTIVE)]))
    for resolution in RESOLUTIONS:
        sizes = [
            Preset(size=size, resolution=resolution, aspect_ratio=ratio)
            for ratio, size in PRESET_SIZES[resolution].items()
        ]
        fitting = [p for p in sizes if rules.width_height and rules.takes(p.size)]
        if resolution in rules.labels:
            groups.append((resolution, [Preset(size=resolution, resolution=resolution), *fitting]))
        elif not rules.labels and fitting and len(fitting) == len(sizes):
            groups.append((resolution, fitting))
    return groups


def preset_sizes(rules: SizeRules) -> list[str]:
    """Every size ``presets`` offers, in order."""
    return [preset.size for _, group in presets(rules) for preset in group]


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _range(low: object | None, high: object | None, unit: str) -> str:
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"from {low} to {high}{unit}"
    if low is not None:
        return f"of at least {low}{unit}"
    return f"of at most {high}{unit}"


def _ratio(value: float) -> str:
    """An aspect ratio (width / height) as "16:9", "1:16" or "2.35:1"."""
    fraction = Fraction(value).limit_denominator(100)
    if abs(float(fraction) - value) < 1e-6:
        return f"{fraction.numerator}:{fraction.denominator}"
    return f"{value:.3g}:1"
