"""Object keys: one spelling, made from ids, and nothing else parses as ours."""

from __future__ import annotations

import pytest

from storage_backends.images import ObjectKey, image_key, parse_key, thumbnail_key


def test_the_keys_we_make_parse_back() -> None:
    assert parse_key(image_key(result_id=42, extension="png")) == ObjectKey(
        result_id=42, is_thumbnail=False, extension="png"
    )
    assert parse_key(thumbnail_key(result_id=42)) == ObjectKey(
        result_id=42, is_thumbnail=True, extension="webp"
    )


@pytest.mark.parametrize(
    "key",
    [
        "generations/42.png\n",  # `$` would take it
        "generations/42.png/",
        "/generations/42.png",
        "generations/42.svg",
        "generations/42.PNG",
        "generations/٤٢.png",
        "generations/12345678901234567890.png",
        "thumbnails/42.jpg",
        "thumbnails/42.webp\n",
        "generations/../42.png",
        "other/42.png",
    ],
)
def test_a_key_we_never_make_is_not_ours(key: str) -> None:
    assert parse_key(key) is None


def test_an_unknown_extension_makes_no_key() -> None:
    with pytest.raises(ValueError, match="unexpected image extension 'svg'"):
        image_key(result_id=1, extension="svg")
