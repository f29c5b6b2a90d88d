"""Write a backup to a file: the JSON `GET /api/export` answers, or a ZIP with every stored image.

The ZIP is streamed to disk (never built in memory) and carries a SHA-256
manifest, so that `import_backup` can prove every byte came back unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from generations.backups.export import write_export_file
from generations.models import GenerationResult


class Command(BaseCommand):
    help = "Export every prompt, model, generation and result to PATH (JSON; a ZIP with --images)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="The file to write (replaced if it exists).")
        parser.add_argument(
            "--images", action="store_true", help="Write a ZIP holding every stored image too."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be exported; write nothing."
        )

    def handle(self, *args: Any, path: Path, images: bool, dry_run: bool, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        if not path.parent.is_dir():
            raise CommandError(f"cannot write {path}: {path.parent} is not a folder")
        if path.is_dir():
            raise CommandError(f"cannot write {path}: it is a folder")
        if dry_run:
            stored = GenerationResult.objects.filter(
                storage_status=GenerationResult.StorageStatus.STORED
            ).count()
            total = GenerationResult.objects.count()
            if verbosity >= 1:
                self.stdout.write(
                    f"dry run: would export {total} results"
                    + (f" and {stored} stored images" if images else "")
                    + f" to {path}; nothing written"
                )
            return
        if verbosity >= 1 and images:
            self.stderr.write("writing the archive (images stream one by one)...")
        try:
            report = write_export_file(path=path, images=images)
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc}") from None
        if verbosity >= 1:
            for problem in report.problems:
                self.stderr.write(self.style.WARNING(f"left out: {problem}"))
            what = (
                f"{report.images} images, {report.thumbnails} thumbnails, {report.bytes} bytes"
                if images
                else "JSON"
            )
            self.stdout.write(self.style.SUCCESS(f"exported to {path} ({what})"))
