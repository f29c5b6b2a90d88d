"""Restore a backup made by `export_backup` (or `GET /api/export`) into an empty database.

Every row keeps its id and every image comes back byte for byte into the active
storage backend. A bundle is read as a stranger's: one that does not match its own
manifest, holds an image the storing worker would refuse (or one over
IMAGE_FETCH_MAX_BYTES), an unsafe URL, or ids that collide with other rows on a
merge is refused whole, with one line, a non-zero exit and nothing left written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from generations.backups.bundle import BundleRefused
from generations.backups.importing import backup_import
from generations.management.progress import progress_bar


class Command(BaseCommand):
    help = (
        "Import a backup (JSON or ZIP) into an empty database, verifying every image's SHA-256. "
        "--merge imports into a non-empty one, skipping rows whose id exists."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="The export file (JSON or ZIP).")
        parser.add_argument(
            "--merge",
            action="store_true",
            help="Allow a non-empty database; rows whose id exists are skipped.",
        )

    def handle(self, *args: Any, path: Path, merge: bool, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        with progress_bar(self, desc="importing", verbosity=verbosity) as bar:
            try:
                report = backup_import(path=path, merge=merge, progress=bar.update)
            except BundleRefused as exc:
                # One line, whatever the bundle put in the reason.
                raise CommandError(" ".join(str(exc).split())) from None
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(f"imported {path}: {report.summary()}"))
