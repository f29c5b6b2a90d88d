"""Check that every stored image is really there, whole, and that nothing else is.

Run from cron: it exits non-zero when anything is wrong (an object missing or not
matching its row's size and SHA-256, a missing thumbnail, an object no row points
at), so that the cron mail or monitor alerts someone.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from generations.management.arguments import positive_int
from generations.management.progress import progress_bar
from generations.models import GenerationResult
from generations.services.maintenance import storage_verify


class Command(BaseCommand):
    help = (
        "Check every stored image against its row (exists, size, SHA-256) and find orphans "
        "both ways. --repair marks broken rows for re-store and rebuilds missing thumbnails; "
        "--delete-orphans deletes objects no row points at; without them it changes nothing. "
        "Exits 1 when something was wrong."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--repair",
            action="store_true",
            help="Mark rows whose object is missing or corrupt for re-store (back to pending).",
        )
        parser.add_argument(
            "--delete-orphans", action="store_true", help="Delete objects that no row points at."
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=4,
            help="Images read and hashed at once (default 4).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        repair = options["repair"]
        delete_orphans = options["delete_orphans"]
        total = GenerationResult.objects.filter(
            storage_status=GenerationResult.StorageStatus.STORED
        ).count()
        with progress_bar(self, desc="verifying", total=total, verbosity=verbosity) as bar:
            report = storage_verify(
                repair=repair,
                delete_orphans=delete_orphans,
                concurrency=options["concurrency"],
                progress=bar.update,
            )

        if verbosity >= 1:
            for item in report.broken:
                self.stdout.write(
                    self.style.ERROR(
                        f"{item.problem}: result {item.result_id} "
                        f"{item.backend}:{item.key} {item.detail}"
                    )
                )
            for result_id in report.thumbnails_missing:
                self.stdout.write(self.style.WARNING(f"thumbnail missing: result {result_id}"))
            for backend, key in report.orphans:
                self.stdout.write(self.style.WARNING(f"orphan: {backend}:{key}"))
            style = self.style.SUCCESS if not report.problems else self.style.ERROR
            self.stdout.write(style(report.summary()))
        if report.problems:
            raise CommandError(f"{report.problems} problems found")
