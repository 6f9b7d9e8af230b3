"""The /metrics, /healthz and /readyz endpoints, served by aiohttp on their own port; what a port that cannot
be listened on means, said once for every server (``listen_error``)."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from autoscaler.errors import ListenError

_REASONS = {
    errno.EADDRINUSE: "the address is already in use (another process listens there)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "the address is not one of this machine's",
}
# The errors of a listen that failed at start-up, as opposed to any other OSError.
LISTEN_ERRNOS = frozenset(_REASONS)
# asyncio's bind error names the address: "error while attempting to bind on address ('h', 8080): ..."
_BOUND_ADDRESS = re.compile(r"address \('?([^',]*)'?, (\d+)")


def build_app(
    *, registry: CollectorRegistry, healthy: Callable[[], str | None], ready: Callable[[], str | None]
) -> web.Application:
    """``healthy``/``ready`` return None when all is well, else the reason, shown with a 503."""

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Callable[[], str | None]) -> Callable[[web.Request], object]:
        async def handler(request: web.Request) -> web.Response:
            problem = check()
            if problem is None:
                return web.Response(text="ok\n")
            return web.Response(status=503, text=f"{problem}\n")

        return handler

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", probe(healthy))  # type: ignore[arg-type]
    app.router.add_get("/readyz", probe(ready))  # type: ignore[arg-type]
    return app


def listen_error(exc: OSError, *, host: str, flags: Mapping[str, int]) -> ListenError:
    """One line for a server that could not listen: which flag and port, and why. ``flags`` maps each flag
    of the failed start to its port; the port is told from the error when several could have failed."""
    reason = _REASONS.get(exc.errno or 0, (exc.strerror or str(exc)).lower())
    named = dict(flags)
    found = _BOUND_ADDRESS.search(str(exc))
    if found is not None and len(named) > 1:
        named = {flag: port for flag, port in named.items() if port == int(found.group(2))} or named
    where = " or ".join(f"{flag} {port}" for flag, port in named.items())
    ports = "/".join(str(port) for port in dict.fromkeys(named.values()))
    return ListenError(
        f"{where}: cannot listen on {host or '*'}:{ports}: {reason}; choose another port (0 picks a free one)"
    )


async def serve(
    app: web.Application, *, host: str, port: int, flag: str = "port"
) -> tuple[web.AppRunner, int]:
    """Starts ``app``; returns its runner (to clean up) and the port actually bound (for port 0). A port
    that cannot be listened on raises ListenError naming ``flag``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno not in LISTEN_ERRNOS:
            raise
        raise listen_error(exc, host=host, flags={flag: port}) from None
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, bound
