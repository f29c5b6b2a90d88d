"""What each model takes (references, groups, streaming, seed, ...), its size rules and its
price per image, as columns an admin edits; the data migration after this one fills them."""

from decimal import Decimal

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("generations", "0004_params_used_without_column_copies"),
    ]

    operations = [
        migrations.AddField(
            model_name="imagemodel",
            name="currency",
            field=models.CharField(
                blank=True,
                default="CNY",
                max_length=3,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Z]{3}$", "A three-letter currency code, such as CNY."
                    )
                ],
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="max_aspect_ratio",
            field=models.FloatField(
                blank=True,
                help_text="The widest width / height it makes, such as 16 for 16:1.",
                null=True,
                validators=[django.core.validators.MinValueValidator(0.001)],
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="max_images",
            field=models.PositiveSmallIntegerField(
                default=1,
                help_text="The most images one call may return (a group, max_images); 1: one image a call.",
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(15),
                ],
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="max_pixels",
            field=models.PositiveIntegerField(
                blank=True, help_text="The most pixels (width x height) it makes.", null=True
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="max_reference_images",
            field=models.PositiveSmallIntegerField(
                default=0,
                help_text="How many reference images one call takes; 0: none (text only).",
                validators=[django.core.validators.MaxValueValidator(14)],
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="max_side",
            field=models.PositiveIntegerField(
                blank=True, help_text="The longest width or height it makes, in pixels.", null=True
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="min_aspect_ratio",
            field=models.FloatField(
                blank=True,
                help_text="The narrowest width / height it makes, such as 0.0625 for 1:16.",
                null=True,
                validators=[django.core.validators.MinValueValidator(0.001)],
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="min_pixels",
            field=models.PositiveIntegerField(
                blank=True, help_text="The fewest pixels (width x height) it makes.", null=True
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="min_side",
            field=models.PositiveIntegerField(
                blank=True, help_text="The shortest width or height it makes, in pixels.", null=True
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="optimize_prompt_modes",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="The optimize_prompt_options modes it takes; none: it takes no such option.",
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="output_formats",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="The output_format values it takes; none: it always answers JPEG.",
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="price_per_image",
            field=models.DecimalField(
                blank=True,
                decimal_places=4,
                help_text="What Ark charges for each image it makes; empty: not known.",
                max_digits=10,
                null=True,
                validators=[django.core.validators.MinValueValidator(Decimal("0"))],
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="requires_reference",
            field=models.BooleanField(
                default=False,
                help_text="It edits a reference image and cannot work from text alone.",
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="size_labels",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="The resolution labels it takes (1K, 2K, 3K, 4K).",
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="streams",
            field=models.BooleanField(
                default=False, help_text="It can stream each image as it is made (stream: true)."
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="takes_adaptive",
            field=models.BooleanField(
                default=False,
                help_text="It takes size adaptive (the shape of the reference image).",
            ),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="takes_guidance_scale",
            field=models.BooleanField(default=False, help_text="It takes a guidance scale."),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="takes_seed",
            field=models.BooleanField(default=False, help_text="It takes a seed."),
        ),
        migrations.AddField(
            model_name="imagemodel",
            name="takes_width_height",
            field=models.BooleanField(
                default=True, help_text="It takes a size as WIDTHxHEIGHT, within the bounds below."
            ),
        ),
        migrations.AlterField(
            model_name="imagemodel",
            name="default_params",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Defaults sent with every request (size, watermark, guidance_scale, ...); a request's own values win.",
            ),
        ),
        migrations.AlterField(
            model_name="imagemodel",
            name="upstream_model_id",
            field=models.CharField(
                help_text="What Ark is asked for: a model id such as doubao-seedream-4-5-251128, or an endpoint id (ep-...).",
                max_length=200,
            ),
        ),
    ]
