"""Real servers on 127.0.0.1 for activator tests: pods that record what they receive, and waiting helpers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

from autoscaler.activator import endpoints, http1
from devstack.loopback import running


@asynccontextmanager
async def proxy_serving(server: http1.Server) -> AsyncIterator[int]:
    """Serves the activator's proxy (``server.build_server(...)``) on 127.0.0.1; yields the port."""
    listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
    try:
        port: int = listener.sockets[0].getsockname()[1]
        yield port
    finally:
        listener.close()
        await server.shutdown(2.0)
        await listener.wait_closed()


@asynccontextmanager
async def serving(server: web.Server) -> AsyncIterator[int]:
    """Serves a low-level ``server`` (``server.build_server(...)``) on 127.0.0.1; yields the port."""
    runner = web.ServerRunner(server, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        yield port
    finally:
        await runner.cleanup()


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as a pod received it."""

    method: str
    raw_path: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Pod:
    """A worker pod: answers 200 with its name, records every request, can hold answers until released."""

    name: str
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    response_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.release.set()

    @property
    def address(self) -> endpoints.Address:
        return endpoints.Address("127.0.0.1", self.port)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                method=request.method,
                raw_path=request.raw_path,
                raw_headers=tuple(request.raw_headers),
                headers=CIMultiDict(request.headers),
                body=body,
            )
        )
        await self.release.wait()
        headers = {"X-Pod": self.name, **self.response_headers}
        return web.Response(body=f"{self.name}:{len(body)}".encode(), headers=headers)


@asynccontextmanager
async def pods(count: int) -> AsyncIterator[list[Pod]]:
    """``count`` running pods."""
    started = [Pod(name=f"pod-{index}") for index in range(count)]
    async with AsyncExitStack() as stack:
        for pod in started:
            pod.port = await stack.enter_async_context(running(pod.app()))
        try:
            yield started
        finally:
            for pod in started:
                pod.release.set()


async def eventually(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Waits (in small steps, bounded) until ``predicate()`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.002)


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """Sends raw bytes to 127.0.0.1:port, reads until the server closes; returns (status, whole answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            answer = await reader.read(-1)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line = answer.split(b"\r\n", 1)[0]
    parts = status_line.split(b" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, answer


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
