"""The embedded default's broker: kombu's filesystem transport, reading a worker's queues in
the order the worker names them.

kombu's own takes its queues in turn, so a worker given `storing,derivatives` would take
a thumbnail job for every image it stores while a backlog of thumbnails waits. Here each
fetch starts again at the first queue: derivatives are taken only while nothing waits
to be stored. (Redis does the same with its `queue_order_strategy` set to `priority`.)
Background generations have a queue of their own, `generations`, which the Procfile
gives a worker of its own; a worker that takes all three names it last.
"""

from __future__ import annotations

from queue import Empty
from typing import Any

from kombu.transport import filesystem
from kombu.utils.scheduling import FairCycle


class _InOrder(FairCycle):
    def get(self, callback: Any, **kwargs: Any) -> Any:
        self.pos = 0
        return super().get(callback, **kwargs)


class Channel(filesystem.Channel):
    def _reset_cycle(self) -> None:
        self._cycle = _InOrder(self._get_and_deliver, self._active_queues, Empty)


class Transport(filesystem.Transport):
    Channel = Channel
