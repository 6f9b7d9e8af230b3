"""The proxy's connections, bounded: headers within a timeout, connections per client, malformed requests.

aiohttp parses requests; this module bounds what a client may hold before a request reaches the activator:

- a request's line and headers must arrive within ``header_timeout`` of its first byte (or of the
  connection's opening): otherwise 408 and the connection closes, never reaching a target;
- one client address may hold at most ``max_connections_per_client`` open connections: more are answered
  503 and closed at once;
- a request the parser refuses (duplicate Host, a garbage request line, ...) is answered 400, one with
  oversized or too many header fields 431; all are logged at info without a traceback and counted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiohttp import http_exceptions, web, web_protocol

from autoscaler.activator import metrics as activator_metrics
from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds of one client connection (seconds, counts, bytes)."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_connections_per_client: int = 256
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 128
    # After an answer that leaves a request body unread, how long the rest is read and dropped before closing.
    lingering_time: float = 2.0


class Guard:
    """Open connections per client address over one listener, and the answers given without a handler."""

    def __init__(self, *, limits: ConnectionLimits, metrics: activator_metrics.ActivatorMetrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self.open: Counter[str] = Counter()

    def admit(self, client: str) -> bool:
        if self.open[client] >= self.limits.max_connections_per_client:
            return False
        self.open[client] += 1
        return True

    def leave(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


def raw_response(status: int, reason: str, text: str) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection, for when no request object exists."""
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class GuardedHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler with the bounds of the module docstring."""

    def __init__(self, manager: web.Server, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._client: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._guard.admit(client):
            limit = self._guard.limits.max_connections_per_client
            log.info(ActivatorLog.CONNECTION_REFUSED, client=client, limit=limit)
            self._answer_and_close(
                transport, 503, "Service Unavailable", f"more than {limit} open connections from {client}"
            )
            return
        self._client = client
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._client is not None:
            self._guard.leave(self._client)
            self._client = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        if not self._in_request and self._header_timer is None and self._client is not None:
            self._arm()  # the first byte of a further request on a kept-alive connection
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self._disarm()
            self._in_request = True

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._in_request = False

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answers what the parser refused (400/431) quietly; anything else as aiohttp does. Counts both."""
        if not isinstance(exc, http_exceptions.HttpProcessingError) or status != 400:
            self._guard.metrics.response(None, status)
            return super().handle_error(request, status, exc, message)
        limits = self._guard.limits
        if isinstance(exc, http_exceptions.LineTooLong) or "Too many headers" in str(exc):
            status = 431
            text = (
                f"request line or header fields too large: at most {limits.max_field_size} bytes per line "
                f"and {limits.max_headers} header fields"
            )
        else:
            text = "malformed request: " + " ".join(str(message or exc).split())[:200]
        log.info(ActivatorLog.REQUEST_MALFORMED, status=status, client=request.remote, reason=text)
        self._guard.metrics.response(None, status)
        response = web.Response(status=status, text=text + "\n")
        response.force_close()
        return response

    # -- the header timer ------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = asyncio.get_running_loop().call_later(
            self._guard.limits.header_timeout, self._headers_timed_out
        )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        timeout = self._guard.limits.header_timeout
        log.info(ActivatorLog.REQUEST_STALLED, client=self._client, stage="headers", timeout=timeout)
        self._answer_and_close(
            transport, 408, "Request Timeout", f"request line and headers not received within {timeout:g}s"
        )

    def _answer_and_close(
        self, transport: asyncio.BaseTransport, status: int, reason: str, text: str
    ) -> None:
        """Answers, ends the sending side, and closes after the lingering time; what the client still sends
        meanwhile is dropped unread (closing at once with unread data would reset the connection, and the
        client might never read the answer)."""
        self._guard.metrics.response(None, status)
        self._answered = True
        self._disarm()
        # uvloop's transports do not subclass asyncio's transport classes: tell a writable one by its methods.
        if hasattr(transport, "write"):
            writable = cast(asyncio.WriteTransport, transport)
            writable.write(raw_response(status, reason, text))
            if writable.can_write_eof():
                writable.write_eof()
        asyncio.get_running_loop().call_later(self._guard.limits.lingering_time, transport.close)


class GuardedServer(web.Server):
    """aiohttp's low-level server, with a GuardedHandler per connection."""

    def __init__(self, handler: Handler, *, guard: Guard, **kwargs: Any) -> None:
        limits = guard.limits
        super().__init__(
            handler,
            keepalive_timeout=limits.keepalive_timeout,
            max_line_size=limits.max_line_size,
            max_field_size=limits.max_field_size,
            max_headers=limits.max_headers,
            lingering_time=limits.lingering_time,
            **kwargs,
        )
        self.guard = guard

    def __call__(self) -> web_protocol.RequestHandler:
        return GuardedHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)
