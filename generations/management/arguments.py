"""Argument types shared by the management commands.

Each turns bad input into one clear `argparse` error line instead of a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt


def positive_int(value: str) -> int:
    """A whole number of 1 or more (a --limit, a --concurrency)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 or more")
    return number


def iso_date(value: str) -> dt.date:
    """A calendar date written YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None
