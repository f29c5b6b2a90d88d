"""Indexes for the gallery's keyset pages filtered by storage status, result status or model.

Each serves `WHERE <filter> AND id < cursor ORDER BY id DESC LIMIT n` as one index range,
so a page deep in 100,000 results reads what the first page reads.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("generations", "0002_seed_seedream_models"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="generationresult",
            index=models.Index(fields=["storage_status", "-id"], name="result_storage_newest"),
        ),
        migrations.AddIndex(
            model_name="generationresult",
            index=models.Index(fields=["status", "-id"], name="result_status_newest"),
        ),
        migrations.AddIndex(
            model_name="generationresult",
            index=models.Index(fields=["model", "-id"], name="result_model_newest"),
        ),
    ]
