"""The bounds of the proxy's client connections, and the count of open connections per client address.

``http1`` applies them (what each bound does is in its docstring).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from autoscaler.activator import metrics as activator_metrics

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
