"""Create the Seedream models users expect; more are added in the admin."""

from django.db import migrations

SEEDREAM_MODELS = [
    {
        "name": "Seedream 4.0",
        "upstream_model_id": "doubao-seedream-4-0-250828",
        "default_params": {
            "size": "2048x2048",
            "watermark": True,
            "capabilities": ["text_to_image", "image_to_image", "sequential"],
        },
    },
    {
        "name": "Seedream 3.0",
        "upstream_model_id": "doubao-seedream-3-0-t2i-250415",
        "default_params": {
            "size": "1024x1024",
            "watermark": True,
            "guidance_scale": 2.5,
            "capabilities": ["text_to_image", "seed", "guidance_scale"],
        },
    },
    {
        "name": "SeedEdit 3.0",
        "upstream_model_id": "doubao-seededit-3-0-i2i-250628",
        "default_params": {
            "size": "adaptive",
            "watermark": True,
            "guidance_scale": 5.5,
            "capabilities": ["image_to_image", "image_required", "seed", "guidance_scale"],
        },
    },
]


def create_models(apps, schema_editor):
    ImageModel = apps.get_model("generations", "ImageModel")
    for spec in SEEDREAM_MODELS:
        ImageModel.objects.get_or_create(
            upstream_model_id=spec["upstream_model_id"],
            defaults={
                "name": spec["name"],
                "provider": "ark",
                "default_params": spec["default_params"],
                "enabled": True,
            },
        )


def remove_models(apps, schema_editor):
    ImageModel = apps.get_model("generations", "ImageModel")
    ImageModel.objects.filter(
        upstream_model_id__in=[spec["upstream_model_id"] for spec in SEEDREAM_MODELS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("generations", "0001_initial")]

    operations = [migrations.RunPython(create_models, remove_models)]
