"""Sizes: what each model takes, how a refusal reads, and the presets offered."""

from __future__ import annotations

import pytest

from generations.sizes import (
    PRESET_SIZES,
    SizeRefused,
    SizeRules,
    check_size,
    normalize_size,
    preset_sizes,
    presets,
)

SEEDREAM_4 = SizeRules(
    labels=("1K", "2K", "4K"),
    min_pixels=921_600,
    max_pixels=16_777_216,
    min_aspect_ratio=1 / 16,
    max_aspect_ratio=16.0,
)
SEEDREAM_3 = SizeRules(min_side=512, max_side=2048)
SEEDEDIT_3 = SizeRules(adaptive=True, width_height=False)


@pytest.mark.parametrize(
    ("given", "sent"),
    [("2k", "2K"), (" 4K ", "4K"), ("Adaptive", "adaptive"), ("1536X1024", "1536x1024")],
)
def test_sizes_are_sent_in_one_spelling(given: str, sent: str) -> None:
    assert normalize_size(given) == sent


@pytest.mark.parametrize("given", ["huge", "2048", "2048x", "x2048", "-5x10", "2K2K", ""])
def test_what_is_no_size_is_refused_whatever_the_model(given: str) -> None:
    with pytest.raises(SizeRefused, match="is not 1K, 2K, 3K, 4K, adaptive or WIDTHxHEIGHT"):
        normalize_size(given)


def test_a_refusal_names_the_model_why_and_what_it_takes() -> None:
    with pytest.raises(SizeRefused) as refused:
        check_size("512x512", SEEDREAM_4, model_name="Seedream 4.0")

    assert str(refused.value) == (
        "Seedream 4.0 does not take 512x512 (262,144 pixels, fewer than 921,600): it takes "
        "1K, 2K or 4K, or WIDTHxHEIGHT of 921,600 to 16,777,216 pixels with an aspect "
        "ratio from 1:16 to 16:1"
    )


@pytest.mark.parametrize(
    ("size", "why"),
    [
        ("16385x1024", "each side must be 64 to 16384"),
        ("20000x1000", "each side must be 64 to 16384"),
        ("16384x512", "an aspect ratio of 32:1"),
        ("4097x4096", "16,781,312 pixels, more than 16,777,216"),
    ],
)
def test_seedream_4_limits(size: str, why: str) -> None:
    with pytest.raises(SizeRefused, match=why):
        check_size(size, SEEDREAM_4, model_name="Seedream 4.0")


def test_seedream_3_takes_each_side_from_512_to_2048_and_no_label() -> None:
    assert check_size("512x2048", SEEDREAM_3, model_name="Seedream 3.0") == "512x2048"
    for refused in ("511x1024", "2049x1024", "1K", "adaptive"):
        with pytest.raises(SizeRefused, match="each side from 512 to 2048 pixels"):
            check_size(refused, SEEDREAM_3, model_name="Seedream 3.0")


def test_seededit_takes_only_adaptive() -> None:
    assert check_size("adaptive", SEEDEDIT_3, model_name="SeedEdit 3.0") == "adaptive"
    with pytest.raises(SizeRefused, match=r"SeedEdit 3\.0 does not take 1024x1024: it takes only"):
        check_size("1024x1024", SEEDEDIT_3, model_name="SeedEdit 3.0")


def test_a_model_is_offered_its_labels_and_the_recommended_sizes_it_takes() -> None:
    groups = presets(SEEDREAM_4)

    assert [resolution for resolution, _ in groups] == ["1K", "2K", "4K"]
    first = groups[0][1]
    assert first[0].size == "1K"
    assert first[0].label == "1K: the model picks the shape from the prompt"
    assert [p.aspect_ratio for p in first[1:]] == list(PRESET_SIZES["1K"])
    assert groups[2][1][2].label == "4704 x 3520 (4:3)"


def test_a_model_without_labels_is_offered_the_resolutions_it_takes_whole() -> None:
    # Seedream 3.0's recommended sizes are the 1K row; at 2K most sides pass 2048.
    assert preset_sizes(SEEDREAM_3) == list(PRESET_SIZES["1K"].values())
    assert preset_sizes(SEEDEDIT_3) == ["adaptive"]


def test_the_demo_upstream_keeps_rules_in_the_same_shape() -> None:
    rules = SizeRules.from_dict(SEEDREAM_4.as_dict())

    assert rules == SEEDREAM_4
    assert set(SEEDREAM_4.as_dict()) == {
        "labels",
        "adaptive",
        "width_height",
        "min_pixels",
        "max_pixels",
        "min_aspect_ratio",
        "max_aspect_ratio",
        "min_side",
        "max_side",
    }
