"""Store every result whose image is not stored yet, newest first (the backfill).

For results left behind by a broker that was down, a worker that died, or a
deploy made before storage existed. It calls the same service as the Celery task
(`result_store_image`), whose claim makes it safe to stop and run again: a result
stored, or being stored by someone else, is skipped, never fetched twice.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone

from generations.management.arguments import iso_date, positive_int
from generations.management.progress import progress_bar, progress_note
from generations.models import GenerationResult
from generations.services.batches import chunked, ids_newest_first, run_bounded
from generations.services.storing import StoreOutcome, result_store_image, results_restore

S = GenerationResult.StorageStatus
STATUS_CHOICES = (S.PENDING.value, S.FAILED.value, S.STORING.value)


def _store_one(result_id: int) -> StoreOutcome:
    return result_store_image(result_id=result_id, will_retry=False)


class Command(BaseCommand):
    help = (
        "Store every result not stored yet, newest first. Without --sync, queue one "
        "Celery task per result; with --sync, store them here with a progress bar. "
        "Safe to stop and run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--status",
            action="append",
            choices=STATUS_CHOICES,
            help="Only results in this storage status (repeatable; 'storing' means lost claims).",
        )
        parser.add_argument(
            "--since", type=iso_date, help="Only results created on or after YYYY-MM-DD."
        )
        parser.add_argument("--limit", type=positive_int, help="Store at most N results.")
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=4,
            help="Parallel fetches with --sync (default 4).",
        )
        parser.add_argument(
            "--sync", action="store_true", help="Store in this process instead of queueing."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be done; change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = int(options["verbosity"])
        queryset = self._queryset(options)
        if options["dry_run"]:
            self._dry_run(queryset, limit=options["limit"], sync=options["sync"])
            return
        total = queryset.count()
        if options["limit"]:
            total = min(total, options["limit"])
        if not total:
            self._say("nothing to store")
            self._summary(Counter())
            return
        ids = ids_newest_first(queryset, limit=options["limit"])
        if not options["sync"]:
            self._queue(ids)
            return
        self._summary(self._store(ids, total=total, concurrency=options["concurrency"]))

    def _queue(self, ids: Iterator[int]) -> None:
        accepted = queued = 0
        for chunk in chunked(ids):
            restoring = results_restore(result_ids=chunk)
            accepted += restoring.accepted
            queued += restoring.queued
        if queued < accepted:
            raise CommandError(
                f"queued {queued} of {accepted} results: the broker is "
                "unavailable; the rest wait as pending for the sweep (or use --sync)"
            )
        self._say(self.style.SUCCESS(f"queued {queued} results for storing"))

    def _queryset(self, options: dict[str, Any]) -> QuerySet[GenerationResult]:
        queryset = GenerationResult.objects.storable()
        if options["status"]:
            queryset = queryset.filter(storage_status__in=options["status"])
        if options["since"]:
            start = dt.datetime.combine(options["since"], dt.time.min, tzinfo=dt.UTC)
            queryset = queryset.filter(created_at__gte=start)
        return queryset.order_by("-id")

    def _store(self, ids: Iterator[int], *, total: int, concurrency: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        with progress_bar(self, desc="storing", total=total, verbosity=self.verbosity) as bar:
            for result_id, outcome in run_bounded(_store_one, ids, concurrency=concurrency):
                if isinstance(outcome, Exception):
                    counts["failed"] += 1
                    progress_note(self, f"result {result_id}: {type(outcome).__name__}: {outcome}")
                else:
                    counts[outcome.value] += 1
                    if self.verbosity >= 2:
                        progress_note(self, f"result {result_id}: {outcome.value}")
                bar.update(1)
        return counts

    def _dry_run(
        self, queryset: QuerySet[GenerationResult], *, limit: int | None, sync: bool
    ) -> None:
        now = timezone.now()
        rows = queryset.values_list("pk", "storage_status", "external_url_expires_at")
        if limit:
            rows = rows[:limit]
        total = expired = 0
        for pk, storage_status, expires_at in rows.iterator(chunk_size=2000):
            dead = bool(expires_at and expires_at < now)
            total += 1
            expired += dead
            if self.verbosity >= 2:
                action = "mark expired (URL dead)" if dead else ("store" if sync else "queue")
                self.stdout.write(f"would {action}: result {pk} ({storage_status})")
        verb = "store" if sync else "queue"
        self._say(
            f"dry run: would {verb} {total - expired} results and mark {expired} expired; "
            "nothing changed"
        )

    def _summary(self, counts: Counter[str]) -> None:
        line = (
            f"stored {counts['stored']}, failed {counts['failed']}, "
            f"expired {counts['expired']}, skipped {counts['skipped']}"
        )
        style = self.style.SUCCESS if not counts["failed"] else self.style.WARNING
        self._say(style(line))

    def _say(self, message: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(message)
