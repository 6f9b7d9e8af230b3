"""What the message workers share: their arguments, a bounded processing rate, the ``started`` and
``stopped`` lines they print and stopping on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
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


def arguments(doc: str | None, *, url_env: str, url_default: str, unit: str) -> argparse.ArgumentParser:
    """A parser with the workers' ``--url`` (default: ``$url_env``, else ``url_default``) and ``--rate``."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--url", default=os.environ.get(url_env, url_default))
    parser.add_argument("--rate", type=float, default=0.0, help=f"{unit} per second (0 = unlimited)")
    return parser


class Run:
    """One worker's run: its pod's name and its pace."""

    def __init__(self, rate: float) -> None:
        self.pod = os.environ.get("POD_NAME", "local")
        self.pace = Pace(rate)

    def started(self, **fields: str) -> None:
        print(json.dumps({"event": "started", "pod": self.pod, **fields}), flush=True)


@contextlib.asynccontextmanager
async def running(rate: float, *, close: Callable[[], Awaitable[object]]) -> AsyncIterator[Run]:
    """A Run; when it ends, however it ends, ``close`` closes the connection and ``stopped`` is printed."""
    run = Run(rate)
    try:
        yield run
    finally:
        await close()
        print(json.dumps({"event": "stopped", "pod": run.pod, "processed": run.pace.processed}), flush=True)
