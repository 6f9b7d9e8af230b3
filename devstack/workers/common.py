"""What the message workers share: a bounded processing rate and stopping on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine
from typing import Any


class Pace:
    """``await pace.one()`` once per message: returns when that message's work is done at ``rate`` per
    second (0: at once), so tests and the demo can watch a backlog drain at a known speed."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.processed = 0
        self._started = time.monotonic()

    async def one(self) -> None:
        self.processed += 1
        if self.rate:
            due = self._started + self.processed / self.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))


def run_until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Runs ``work``; SIGTERM or SIGINT cancels it, so its ``finally`` blocks close connections cleanly."""

    async def runner() -> None:
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())
