"""HTTP servers on 127.0.0.1 inside the calling process (subscribers, pods, fake controllers), shared by the
tests and the benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


@asynccontextmanager
async def running(app: web.Application, **runner_options: Any) -> AsyncIterator[int]:
    """Serves ``app`` on an ephemeral 127.0.0.1 port for the block; yields the port."""
    runner = web.AppRunner(app, shutdown_timeout=2.0, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        yield port
    finally:
        await runner.cleanup()
