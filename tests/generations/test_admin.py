"""The admin of models: what each model takes, its size rules and its price are editable."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from generations.models import ImageModel

pytestmark = pytest.mark.django_db

SEEDREAM_45 = "doubao-seedream-4-5-251128"


def change_form(model: ImageModel, **changes: Any) -> dict[str, Any]:
    """The change form of ``model`` as the admin posts it, with ``changes``."""
    data: dict[str, Any] = {
        "name": model.name,
        "provider": model.provider,
        "upstream_model_id": model.upstream_model_id,
        "default_params": json.dumps(model.default_params),
        "max_reference_images": model.max_reference_images,
        "max_images": model.max_images,
        "optimize_prompt_modes": model.optimize_prompt_modes,
        "output_formats": model.output_formats,
        "size_labels": model.size_labels,
        "min_pixels": model.min_pixels or "",
        "max_pixels": model.max_pixels or "",
        "min_aspect_ratio": model.min_aspect_ratio or "",
        "max_aspect_ratio": model.max_aspect_ratio or "",
        "min_side": model.min_side or "",
        "max_side": model.max_side or "",
        "price_per_image": "",
        "currency": model.currency,
    }
    for flag in (
        "enabled",
        "requires_reference",
        "streams",
        "takes_seed",
        "takes_guidance_scale",
        "takes_adaptive",
        "takes_width_height",
    ):
        if getattr(model, flag):
            data[flag] = "on"
    data.update(changes)
    return data


def change_url(model: ImageModel) -> str:
    return reverse("admin:generations_imagemodel_change", args=[model.pk])


def test_the_change_page_shows_the_rules_with_a_checkbox_per_label(admin_client: Client) -> None:
    model = ImageModel.objects.get(upstream_model_id=SEEDREAM_45)
    html = admin_client.get(change_url(model)).content.decode()

    assert re.search(r'name="size_labels" value="2K"[^>]*checked', html)
    assert not re.search(r'name="size_labels" value="1K"[^>]*checked', html)
    assert 'name="min_pixels" value="3686400"' in html
    assert "Requests are checked against these before Ark is called." in html


def test_an_admin_edits_the_rules_and_the_price(admin_client: Client) -> None:
    model = ImageModel.objects.get(upstream_model_id=SEEDREAM_45)
    response = admin_client.post(
        change_url(model),
        change_form(model, size_labels=["2K"], price_per_image="0.25", currency="CNY"),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    model.refresh_from_db()
    assert model.size_labels == ["2K"]
    assert (model.price_per_image, model.currency) == (Decimal("0.2500"), "CNY")
    assert not model.size_rules.takes("4K")


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        (
            {"default_params": json.dumps({"size": "1024x1024"})},
            "default_params",
            "Seedream 4.5 does not take 1024x1024",
        ),
        ({"min_pixels": "20000000"}, "max_pixels", "Less than the min pixels"),
        ({"currency": "rmb"}, "currency", "three-letter currency code"),
        ({"max_images": "16"}, "max_images", "less than or equal to 15"),
    ],
)
def test_rules_that_cannot_hold_are_refused(
    admin_client: Client, changes: dict[str, Any], field: str, words: str
) -> None:
    model = ImageModel.objects.get(upstream_model_id=SEEDREAM_45)
    response = admin_client.post(change_url(model), change_form(model, **changes))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(words in message for message in errors[field]), errors
    model.refresh_from_db()
    assert model.min_pixels == 3_686_400 and model.max_images == 15
