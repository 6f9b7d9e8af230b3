"""A subscriber pod for the event-broker tests: records every delivered event and answers 202 (no reply).

``python -m tests.e2e.eventing_worker --port 8080 --record FILE [--delay S]``: each POST appends one JSON
line ``{"id", "type", "pod", "at"}`` to FILE (pods share the machine's filesystem on the devstack).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections.abc import Mapping

from aiohttp import web


def _append(record: str, line: Mapping[str, object]) -> None:
    with open(record, "a") as out:
        out.write(json.dumps(line) + "\n")


def build_app(record: str, delay: float) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        line = {
            "id": request.headers.get("ce-id"),
            "type": request.headers.get("ce-type"),
            "pod": os.environ.get("POD_NAME", "local"),
            "at": time.time(),
        }
        _append(record, line)
        return web.Response(status=202)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", handle)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--record", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    runner = web.AppRunner(build_app(args.record, args.delay))
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", args.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
