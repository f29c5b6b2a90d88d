"""The progress bar of the long management commands, on the command's own stderr."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from tqdm import tqdm


def _plain(text: str) -> str:
    return text


class _Unended:
    """A command's stderr as tqdm writes to it: `OutputWrapper.write` would end each of
    tqdm's carriage-return updates with a newline (one line per step) and colour it as
    an error on a terminal."""

    def __init__(self, command: BaseCommand) -> None:
        self._stream = command.stderr

    def write(self, text: str) -> None:
        self._stream.write(text, style_func=_plain, ending="")

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def __eq__(self, other: object) -> bool:  # so `progress_note` clears this bar first
        return isinstance(other, _Unended) and other._stream is self._stream

    def __hash__(self) -> int:
        return id(self._stream)


def progress_bar(
    command: BaseCommand, *, desc: str, verbosity: int, total: int | None = None, **kwargs: Any
) -> Any:
    """A tqdm bar on `command`'s stderr, silent at `--verbosity 0`."""
    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        file=_Unended(command),
        disable=verbosity < 1,
        **kwargs,
    )


def progress_note(command: BaseCommand, text: str) -> None:
    """One line on `command`'s stderr, above its progress bar if one is drawn."""
    tqdm.write(text, file=_Unended(command))
