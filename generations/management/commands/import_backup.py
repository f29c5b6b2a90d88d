"""Restore a backup made by `export_backup` (or `GET /api/export`) into an empty database.

Every row keeps its id and every image comes back byte for byte into the active
storage backend; a bundle that does not match its own manifest is refused whole,
with nothing written, so a bad backup is found at once and not half-restored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from generations.backup import BundleRefused, backup_import


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
        raw_stderr = getattr(self.stderr, "_out", self.stderr)  # tqdm needs the raw stream
        with tqdm(desc="importing", unit="img", file=raw_stderr, disable=verbosity < 1) as bar:
            try:
                report = backup_import(path=path, merge=merge, progress=bar.update)
            except BundleRefused as exc:
                raise CommandError(str(exc)) from None
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(f"imported {path}: {report.summary()}"))
