"""Serving one activator process: the proxy and admin listeners, the reporter, draining on a signal."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import prometheus_client
import structlog
from aiohttp import hdrs, web

from autoscaler.activator import loops, reporter, server
from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Socket:
    """One bound listening socket: its host (an IP address) and port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Listening:
    """Where one activator process listens: the proxy's sockets and the admin (metrics, probes) sockets."""

    proxy: tuple[Socket, ...]
    admin: tuple[Socket, ...]

    @property
    def proxy_ports(self) -> tuple[int, ...]:
        return tuple(socket.port for socket in self.proxy)

    @property
    def admin_ports(self) -> tuple[int, ...]:
        return tuple(socket.port for socket in self.admin)


def _sockets(addresses: Iterable[Any]) -> tuple[Socket, ...]:
    """aiohttp's runner addresses (IPv4 pairs, IPv6 4-tuples) as Sockets; other families are left out."""
    return tuple(
        Socket(str(address[0]), address[1])
        for address in addresses
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int)
    )


def build_admin_app(activator: server.Activator) -> web.Application:
    """Metrics and probes, on their own port: ``/metrics``, ``/healthz``, ``/readyz`` (503 when draining)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=prometheus_client.generate_latest(activator.registry),
            headers={hdrs.CONTENT_TYPE: prometheus_client.CONTENT_TYPE_LATEST},
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if activator.draining:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def stop_on_signals(*signals: signal.Signals) -> asyncio.Event:
    """An event set on SIGTERM or SIGINT (or the given signals), for ``serve(stop=...)``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals or (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(
    *,
    activator: server.Activator,
    stop: asyncio.Event,
    host: str = "0.0.0.0",
    port: int = 8080,
    admin_host: str = "0.0.0.0",
    admin_port: int | None = 9090,
    controller_url: str | Callable[[], str | None] | None = None,
    token: str | Callable[[], str] = "",
    activator_name: str = "activator",
    report_interval: float = 1.0,
    report_timeout: float = 2.0,
    drain_timeout: float = 30.0,
    shutdown_timeout: float = 5.0,
    on_listening: Callable[[Listening], None] | None = None,
    reuse_port: bool = False,
) -> server.DrainResult:
    """Runs the activator until ``stop`` is set, then drains for up to ``drain_timeout`` and stops.

    With ``controller_url`` a Reporter pushes concurrency there and becomes ``activator.poker`` (replacing
    any other) for the duration. The readiness probe fails from the moment the drain starts.
    ``on_listening`` receives the bound sockets once serving. ``reuse_port``: the proxy's socket is opened
    with SO_REUSEPORT, to share ``port`` with other activator processes.
    """
    report_task: asyncio.Task[None] | None = None
    if controller_url is not None:
        pusher = reporter.Reporter(
            url=controller_url,
            token=token,
            activator=activator_name,
            source=activator,
            metrics=activator.metrics,
            interval=report_interval,
            timeout=report_timeout,
        )
        activator.poker = pusher
        report_task = asyncio.create_task(pusher.run(), name="activator-reporter")
    runners: list[web.BaseRunner] = []
    proxy = server.build_server(activator)
    listener: asyncio.Server | None = None
    try:
        listener = await asyncio.get_running_loop().create_server(
            proxy, host, port, reuse_port=reuse_port or None, backlog=1024
        )
        admin: tuple[Socket, ...] = ()
        if admin_port is not None:
            admin_runner = web.AppRunner(build_admin_app(activator), shutdown_timeout=shutdown_timeout)
            runners.append(admin_runner)
            await admin_runner.setup()
            await web.TCPSite(admin_runner, admin_host, admin_port).start()
            admin = _sockets(admin_runner.addresses)
        bound = Listening(proxy=_sockets(sock.getsockname() for sock in listener.sockets), admin=admin)
        log.info(
            ActivatorLog.SERVER_STARTED,
            proxy=[str(s) for s in bound.proxy],
            admin=[str(s) for s in bound.admin],
            event_loop=loops.running(),
        )
        if on_listening is not None:
            on_listening(bound)
        await stop.wait()
        return await activator.drain(timeout=drain_timeout)
    finally:
        if report_task is not None:
            report_task.cancel()
            await asyncio.gather(report_task, return_exceptions=True)
            activator.poker = None
        for runner in reversed(runners):
            await runner.cleanup()
        if listener is not None:
            listener.close()
            await proxy.shutdown(shutdown_timeout)
            await listener.wait_closed()
        await activator.close()
