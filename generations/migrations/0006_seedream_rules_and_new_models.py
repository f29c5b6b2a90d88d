"""Each Seedream model's capabilities and size rules, as Ark's image generation API
reference gives them, and the two models it added: Seedream 4.5 and Seedream 5.0 lite.

Capabilities used to be a list in `default_params["capabilities"]`; they move to the
columns, for every model, and the list is dropped. A model added in the admin keeps
taking what it took: its list is read as before, and its sizes are left to Ark (every
label, adaptive, any WIDTHxHEIGHT) until an admin writes its rules.
"""

from typing import Any

from django.db import migrations

_ASPECT = {"min_aspect_ratio": 1 / 16, "max_aspect_ratio": 16.0}
_ARK_4 = {
    "max_reference_images": 14,
    "max_images": 15,
    "streams": True,
    "takes_width_height": True,
    "max_pixels": 16_777_216,
    **_ASPECT,
}

# upstream model id -> name, defaults (for a model this migration creates) and rules.
SEEDREAM_RULES: dict[str, dict[str, Any]] = {
    "doubao-seedream-4-0-250828": {
        "name": "Seedream 4.0",
        "rules": {
            **_ARK_4,
            "optimize_prompt_modes": ["standard", "fast"],
            "size_labels": ["1K", "2K", "4K"],
            "min_pixels": 921_600,
        },
    },
    "doubao-seedream-4-5-251128": {
        "name": "Seedream 4.5",
        "default_params": {"size": "2048x2048", "watermark": True},
        "rules": {
            **_ARK_4,
            "optimize_prompt_modes": ["standard"],
            "size_labels": ["2K", "4K"],
            "min_pixels": 3_686_400,
        },
    },
    "doubao-seedream-5-0-260128": {
        "name": "Seedream 5.0 lite",
        "default_params": {"size": "2048x2048", "watermark": True},
        "rules": {
            **_ARK_4,
            "optimize_prompt_modes": ["standard"],
            "output_formats": ["png", "jpeg"],
            "size_labels": ["2K", "3K", "4K"],
            "min_pixels": 3_686_400,
        },
    },
    "doubao-seedream-3-0-t2i-250415": {
        "name": "Seedream 3.0",
        "rules": {
            "takes_seed": True,
            "takes_guidance_scale": True,
            "takes_width_height": True,
            "min_side": 512,
            "max_side": 2048,
        },
    },
    "doubao-seededit-3-0-i2i-250628": {
        "name": "SeedEdit 3.0",
        "rules": {
            "requires_reference": True,
            "max_reference_images": 1,
            "takes_seed": True,
            "takes_guidance_scale": True,
            "takes_adaptive": True,
            "takes_width_height": False,
        },
    },
}
ADDED = ("doubao-seedream-4-5-251128", "doubao-seedream-5-0-260128")
# What a model made before this migration was left at: Ark judged its sizes.
_UNKNOWN_SIZE_RULES = {"size_labels": ["1K", "2K", "3K", "4K"], "takes_adaptive": True}
# The columns' defaults, for a seeded model whose rules leave one out.
_DEFAULTS = {
    "requires_reference": False,
    "max_reference_images": 0,
    "max_images": 1,
    "streams": False,
    "takes_seed": False,
    "takes_guidance_scale": False,
    "optimize_prompt_modes": [],
    "output_formats": [],
    "size_labels": [],
    "takes_adaptive": False,
    "takes_width_height": True,
    "min_pixels": None,
    "max_pixels": None,
    "min_aspect_ratio": None,
    "max_aspect_ratio": None,
    "min_side": None,
    "max_side": None,
}


def _from_capability_list(capabilities: list[str]) -> dict[str, Any]:
    return {
        "requires_reference": "image_required" in capabilities,
        "max_reference_images": 1 if "image_to_image" in capabilities else 0,
        "max_images": 15 if "sequential" in capabilities else 1,
        "takes_seed": "seed" in capabilities,
        "takes_guidance_scale": "guidance_scale" in capabilities,
    }


def create_models(apps: Any, schema_editor: Any) -> None:
    """Add the new Seedream models, and write every Seedream model's rules."""
    ImageModel = apps.get_model("generations", "ImageModel")
    for upstream_id in ADDED:
        spec = SEEDREAM_RULES[upstream_id]
        if not ImageModel.objects.filter(upstream_model_id=upstream_id).exists():
            name = spec["name"]
            if ImageModel.objects.filter(name=name).exists():
                name = f"{name} ({upstream_id})"
            ImageModel.objects.create(
                name=name,
                provider="ark",
                upstream_model_id=upstream_id,
                default_params=spec["default_params"],
                enabled=True,
            )
    for model in ImageModel.objects.filter(upstream_model_id__in=SEEDREAM_RULES):
        _write(model, {**_DEFAULTS, **SEEDREAM_RULES[model.upstream_model_id]["rules"]})


def move_capability_lists(apps: Any, schema_editor: Any) -> None:
    """Every other model: its capability list becomes the columns."""
    ImageModel = apps.get_model("generations", "ImageModel")
    for model in ImageModel.objects.exclude(upstream_model_id__in=SEEDREAM_RULES):
        capabilities = list((model.default_params or {}).get("capabilities") or [])
        _write(model, {**_from_capability_list(capabilities), **_UNKNOWN_SIZE_RULES})


def fill_rules(apps: Any, schema_editor: Any) -> None:
    create_models(apps, schema_editor)
    move_capability_lists(apps, schema_editor)


def _write(model: Any, values: dict[str, Any]) -> None:
    for field, value in values.items():
        setattr(model, field, value)
    model.default_params = {
        k: v for k, v in (model.default_params or {}).items() if k != "capabilities"
    }
    model.save(update_fields=[*values, "default_params"])


def restore_capability_lists(apps: Any, schema_editor: Any) -> None:
    ImageModel = apps.get_model("generations", "ImageModel")
    ImageModel.objects.filter(upstream_model_id__in=ADDED).delete()
    for model in ImageModel.objects.all():
        taken = {
            "text_to_image": not model.requires_reference,
            "image_to_image": model.max_reference_images > 0,
            "image_required": model.requires_reference,
            "seed": model.takes_seed,
            "guidance_scale": model.takes_guidance_scale,
            "sequential": model.max_images > 1,
        }
        params = dict(model.default_params or {})
        params["capabilities"] = [name for name, yes in taken.items() if yes]
        model.default_params = params
        model.save(update_fields=["default_params"])


class Migration(migrations.Migration):
    dependencies = [("generations", "0005_image_model_capabilities_size_rules_price")]

    operations = [migrations.RunPython(fill_rules, restore_capability_lists)]
