"""An HTTP worker: answers every request with JSON naming the pod, after an optional delay.

``python -m devstack.workers.http_worker --port 8080 [--delay 0.05] [--startup-delay 0] [--record FILE]``.
GET /healthz is the readiness endpoint. POST bodies are echoed back byte-for-byte with the request's
CloudEvents headers, so tests can check that events arrive unchanged. ``--record FILE`` appends one JSON line
per POST, ``{"id", "type", "time", "pod", "at", "ready_at"}`` (the CloudEvents id, type and time attributes,
this machine's clock when the request arrived and when the worker started listening), so a demo or a
benchmark can count what the worker received. ``--consume``: POSTs are answered 202 with no body, as an
event consumer does (a Trigger's subscriber: an echo would be a reply event sent back into the broker).
SIGTERM: finish in-flight requests, then exit.

A pod that fails after its readiness probe passed: ``--exit-after-probes N`` exits (status 1) right after
answering its N-th GET /healthz, so that it stops listening before the first request reaches it;
``--exit-on-request`` exits on receiving its first other request, before answering it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

from aiohttp import web

READY_AT = "ready_at"
RECORD = "record"
CONSUME = "consume"


def record(request: web.Request) -> None:
    """One JSON line about this request, appended to the ``--record`` file (one write: lines from the
    pods that share the file do not interleave)."""
    line = {
        "id": request.headers.get("ce-id"),
        "type": request.headers.get("ce-type"),
        "time": request.headers.get("ce-time"),
        "pod": os.environ.get("POD_NAME", "local"),
        "at": time.time(),
        "ready_at": request.app[READY_AT],
    }
    with open(request.app[RECORD], "a") as out:
        out.write(json.dumps(line) + "\n")


def _exit_now() -> None:
    print(json.dumps({"event": "exiting", "reason": "told to fail after its probe"}), flush=True)
    os._exit(1)


async def handle(request: web.Request) -> web.StreamResponse:
    if request.app["exit_on_request"]:
        _exit_now()
    if request.app[RECORD] and request.method == "POST":
        record(request)
    # ``?delay=<seconds>`` overrides --delay for one request (a burst that keeps the pods busy).
    delay = float(request.query.get("delay", request.app["delay"]))
    if delay:
        await asyncio.sleep(delay)
    if request.method == "POST" and request.app.get(CONSUME):
        await request.read()
        return web.Response(status=202)
    if request.method == "POST":
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("ce-")}
        headers["X-Worker-Pod"] = os.environ.get("POD_NAME", "local")
        headers["X-Received-Content-Type"] = request.headers.get("Content-Type", "")
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")
    return web.json_response(
        {
            "pod": os.environ.get("POD_NAME", "local"),
            "ip": os.environ.get("POD_IP", ""),
            "path": request.path_qs,
            "ready_at": request.app[READY_AT],
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "probes": len(request.app["probes"]),
        }
    )


async def healthz(request: web.Request) -> web.StreamResponse:
    probes = request.app["probes"]
    probes.append(time.time())
    exit_after = request.app["exit_after_probes"]
    if exit_after and len(probes) >= exit_after:
        response = web.Response(text="ok", headers={"Connection": "close"})
        await response.prepare(request)
        await response.write_eof()
        _exit_now()
    return web.Response(text="ok")


def build_app(
    *,
    delay: float = 0.0,
    record: str = "",
    consume: bool = False,
    exit_after_probes: int = 0,
    exit_on_request: bool = False,
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app["delay"] = delay
    app[RECORD] = record
    app[CONSUME] = consume
    app[READY_AT] = None
    app["probes"] = []  # when each GET /healthz came
    app["exit_after_probes"] = exit_after_probes
    app["exit_on_request"] = exit_on_request
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds before listening")
    parser.add_argument("--record", default="", help="append one JSON line per POST to this file")
    parser.add_argument("--consume", action="store_true", help="answer POSTs 202 with no body (no echo)")
    parser.add_argument(
        "--exit-after-probes", type=int, default=0, help="exit after answering this many GET /healthz"
    )
    parser.add_argument(
        "--exit-on-request", action="store_true", help="exit on the first request other than GET /healthz"
    )
    args = parser.parse_args()
    await asyncio.sleep(args.startup_delay)
    app = build_app(
        delay=args.delay,
        record=args.record,
        consume=args.consume,
        exit_after_probes=args.exit_after_probes,
        exit_on_request=args.exit_on_request,
    )
    runner = web.AppRunner(app, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=1024)
    await site.start()
    app[READY_AT] = time.time()
    print(json.dumps({"event": "listening", "port": args.port, "ready_at": app[READY_AT]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
