"""Move every stored image (and thumbnail) to another storage backend while the site serves.

Each object is copied in chunks and checked against its row's size and SHA-256,
and what the target holds is checked after the write: by the MD5 an S3 single-part
upload reports (its ETag), else by reading it back. Only then is its row switched (one
conditional UPDATE) and the source object deleted. `/api/images/<id>` reads the backend
from the row, so the stable URLs never change; a stopped run resumes where it left off.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from generations.management.arguments import positive_int
from generations.management.progress import progress_bar, progress_note
from generations.services.batches import ids_newest_first, run_bounded
from generations.services.maintenance import (
    MigrationFailed,
    result_migrate_storage,
    results_to_migrate,
)
from storage_backends import images as image_storage
from storage_backends.conf import BACKENDS


class Command(BaseCommand):
    help = (
        "Copy every stored image from the backend its row records to --to, check each "
        "write, switch the row, then delete the source (unless --keep-source). Resumable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", required=True, choices=BACKENDS, help="The target backend.")
        parser.add_argument(
            "--keep-source",
            action="store_true",
            help="Leave the source objects in place after copying.",
        )
        parser.add_argument("--limit", type=positive_int, help="Move at most N images in this run.")
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=4,
            help="Images copied at once (default 4).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would move; change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        target = options["to"]
        try:
            image_storage.image_storage(target)
        except ImproperlyConfigured as exc:
            raise CommandError(f"cannot migrate to {target!r}: {exc}") from None

        queryset = results_to_migrate(target=target)
        total = queryset.count()
        if options["limit"]:
            total = min(total, options["limit"])
        if options["dry_run"]:
            if verbosity >= 1:
                self.stdout.write(
                    f"dry run: would move {total} images to {target}; nothing changed"
                )
            return

        def move(result_id: int) -> bool:
            return result_migrate_storage(
                result_id=result_id, target=target, keep_source=options["keep_source"]
            )

        moved = skipped = 0
        failures: list[str] = []
        ids = ids_newest_first(queryset, limit=options["limit"])
        with progress_bar(self, desc=f"to {target}", total=total, verbosity=verbosity) as bar:
            for result_id, outcome in run_bounded(move, ids, concurrency=options["concurrency"]):
                if isinstance(outcome, MigrationFailed):
                    failures.append(f"result {result_id}: {outcome}")
                    if verbosity >= 1:
                        progress_note(self, f"result {result_id}: {outcome}")
                elif isinstance(outcome, Exception):
                    raise outcome
                elif outcome:
                    moved += 1
                else:
                    skipped += 1
                bar.update(1)

        line = f"moved {moved}, skipped {skipped}, failed {len(failures)} (to {target})"
        if verbosity >= 1:
            self.stdout.write((self.style.ERROR if failures else self.style.SUCCESS)(line))
        if failures:
            raise CommandError(
                f"{len(failures)} images could not be moved; their rows are unchanged"
            )
