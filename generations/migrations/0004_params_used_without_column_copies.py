"""`params_used` stops copying the external URL and the storage error: the columns are
the truth. Copies written before are folded into empty columns, then dropped."""

from typing import Any

from django.db import migrations

_KEYS = ("externalImageUrl", "storageError")


def fold_copies(apps: Any, schema_editor: Any) -> None:
    GenerationResult = apps.get_model("generations", "GenerationResult")
    last_id = 0
    while True:
        # Keyset chunks: a table of a million rows is never loaded at once.
        chunk = list(
            GenerationResult.objects.filter(pk__gt=last_id)
            .order_by("pk")
            .only("pk", "params_used", "external_url", "storage_error")[:2000]
        )
        if not chunk:
            return
        last_id = chunk[-1].pk
        changed = []
        for row in chunk:
            params = row.params_used if isinstance(row.params_used, dict) else {}
            if not any(key in params for key in _KEYS):
                continue
            url = params.pop("externalImageUrl", None)
            error = params.pop("storageError", None)
            if not row.external_url and isinstance(url, str):
                row.external_url = url
            if not row.storage_error and isinstance(error, str):
                row.storage_error = error
            row.params_used = params
            changed.append(row)
        GenerationResult.objects.bulk_update(
            changed, ["params_used", "external_url", "storage_error"], batch_size=500
        )


class Migration(migrations.Migration):
    dependencies = [("generations", "0003_gallery_keyset_page_indexes")]

    operations = [migrations.RunPython(fold_copies, migrations.RunPython.noop)]
