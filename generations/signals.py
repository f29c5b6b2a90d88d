"""Signals of the generations domain.

`results_changed` is sent once a write that adds, removes or changes the storage of
results has committed, whoever made it: the gallery's views, the API, a task, a
command or the admin. Listeners (the gallery's cached header counts) refresh on it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import Signal

results_changed = Signal()


def announce_results_changed() -> None:
    """Send `results_changed` when the current transaction commits (now, outside one)."""
    transaction.on_commit(lambda: results_changed.send(sender=None))


def result_saved(sender: Any, **kwargs: Any) -> None:
    """A single save (the admin's change form, a test's factory) changes results too."""
    announce_results_changed()
