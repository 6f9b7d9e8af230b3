"""Kept-alive HTTP/1.1 connections to endpoint addresses, and one exchange on them: the forwarder's fast path.

Each endpoint address has its own bounded pool: at most ``limit`` connections open at once (a request finding
them all busy waits, up to ``wait_timeout``, for one to come free); an idle connection is reused (the most
recently used first) and closed after ``keepalive`` seconds unused. One request at a time per connection.

The request head is written from headers aiohttp's server already parsed and checked; the answer is read by
aiohttp's client protocol (its C response parser, streamed payload, read timeout). Nothing here parses HTTP.
A request sent on a reused connection that the endpoint had closed meanwhile (nothing came back) is sent once
more on a new connection when its method is idempotent, as aiohttp's client does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import hdrs, http_exceptions
from aiohttp.client_proto import ResponseHandler
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy

from autoscaler import errors
from autoscaler.activator import endpoints

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_READ_BUFFER = 64 * 1024


class ConnectFailed(errors.UpstreamError):
    """No connection to the endpoint could be made; nothing of the request was sent."""


class UpstreamTimeout(errors.UpstreamError):
    """The endpoint did not accept the connection or answer in time."""


@dataclass(eq=False, slots=True)
class _Connection:
    protocol: ResponseHandler
    address: endpoints.Address
    reused: bool = False
    idle: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Endpoint:
    open: int = 0
    idle: list[_Connection] = field(default_factory=list)
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)


class Pool:
    """The bounded pools of every endpoint address one forwarder talks to."""

    def __init__(
        self, *, limit: int, connect_timeout: float, wait_timeout: float, keepalive: float = 15.0
    ) -> None:
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._wait_timeout = wait_timeout
        self._keepalive = keepalive
        self._endpoints: dict[endpoints.Address, _Endpoint] = {}
        self._closed = False

    def open_connections(self, address: endpoints.Address) -> int:
        found = self._endpoints.get(address)
        return found.open if found is not None else 0

    async def acquire(self, address: endpoints.Address) -> _Connection:
        """A connection to ``address``: an idle one, a new one within the bound, or the next to come free.

        Raises ConnectFailed (refused, unreachable) or UpstreamTimeout (connecting, or waiting for one).
        """
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            endpoint = self._endpoints[address] = _Endpoint()
        while True:
            while endpoint.idle:
                conn = endpoint.idle.pop()
                if conn.idle is not None:
                    conn.idle.cancel()
                    conn.idle = None
                if conn.protocol.is_connected() and not conn.protocol.should_close:
                    conn.reused = True
                    return conn
                self._discard(conn, endpoint)
            if endpoint.open < self._limit:
                return await self._connect(address, endpoint)
            waiter = asyncio.get_running_loop().create_future()
            endpoint.waiters.append(waiter)
            try:
                async with asyncio.timeout(self._wait_timeout):
                    await waiter
            except TimeoutError:
                raise UpstreamTimeout(
                    f"{address}: all {self._limit} connections stayed busy for {self._wait_timeout:g}s"
                ) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake(endpoint)  # woken but leaving: the slot goes to the next in line
                raise
            finally:
                with contextlib.suppress(ValueError):
                    endpoint.waiters.remove(waiter)

    async def _connect(self, address: endpoints.Address, endpoint: _Endpoint) -> _Connection:
        loop = asyncio.get_running_loop()
        endpoint.open += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: ResponseHandler(loop), address.ip, address.port
                )
        except TimeoutError:
            self._left(address, endpoint)
            raise UpstreamTimeout(f"{address} did not accept a connection in time") from None
        except OSError as exc:
            self._left(address, endpoint)
            raise ConnectFailed(f"cannot connect to {address}: {exc}") from exc
        except BaseException:
            self._left(address, endpoint)
            raise
        return _Connection(protocol, address)

    def release(self, conn: _Connection, *, keep: bool) -> None:
        """Gives a connection back: kept idle for the next request when ``keep`` and it can take one."""
        endpoint = self._endpoints.get(conn.address)
        if endpoint is None:  # the pool was closed meanwhile
            conn.protocol.close()
            return
        protocol = conn.protocol
        if keep and not self._closed and protocol.is_connected() and not protocol.should_close:
            conn.idle = asyncio.get_running_loop().call_later(self._keepalive, self._expire, conn)
            endpoint.idle.append(conn)
            self._wake(endpoint)
            return
        self._discard(conn, endpoint)

    def _discard(self, conn: _Connection, endpoint: _Endpoint) -> None:
        conn.protocol.close()
        self._left(conn.address, endpoint)

    def _left(self, address: endpoints.Address, endpoint: _Endpoint) -> None:
        """One connection of ``address`` is gone: a waiter may open one, an unused pool is dropped."""
        endpoint.open -= 1
        if not self._wake(endpoint) and not endpoint.open and self._endpoints.get(address) is endpoint:
            del self._endpoints[address]

    def _wake(self, endpoint: _Endpoint) -> bool:
        while endpoint.waiters:
            waiter = endpoint.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def _expire(self, conn: _Connection) -> None:
        endpoint = self._endpoints.get(conn.address)
        if endpoint is not None and conn in endpoint.idle:
            endpoint.idle.remove(conn)
            conn.idle = None
            self._discard(conn, endpoint)

    def close(self) -> None:
        """Closes every idle connection; connections in use close when released."""
        self._closed = True
        for endpoint in list(self._endpoints.values()):
            for conn in endpoint.idle:
                if conn.idle is not None:
                    conn.idle.cancel()
                conn.protocol.close()
            endpoint.idle.clear()
        self._endpoints.clear()


class Answer:
    """The endpoint's response once its head arrived; its body streams from ``content``."""

    __slots__ = ("_conn", "_pool", "_should_close", "content", "headers", "reason", "status")

    def __init__(
        self,
        pool: Pool,
        conn: _Connection,
        message: aiohttp.http_parser.RawResponseMessage,
        content: StreamReader,
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status: int = message.code
        self.reason: str | None = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = content
        self._should_close = message.should_close

    @property
    def content_length(self) -> int | None:
        value = self.headers.get(hdrs.CONTENT_LENGTH)
        return int(value) if value is not None and value.isdigit() else None

    def release(self) -> None:
        """Back to the pool when the whole body was read and the endpoint keeps the connection, else
        closed; a second call does nothing."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn, keep=self.content.is_eof() and not self._should_close)


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The request line and header block, from a method, origin-form target and header values that aiohttp's
    server parser already accepted (no CR or LF can be in them)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


async def exchange(
    pool: Pool,
    *,
    address: endpoints.Address,
    method: str,
    head: bytes,
    body: bytes,
    read_timeout: float,
) -> Answer:
    """Sends ``head`` and ``body`` to ``address`` on a pooled connection and returns the answer's head.

    Raises ConnectFailed (nothing sent), UpstreamTimeout (no connection or no answer in time), or
    UpstreamError (the endpoint closed or answered something that is not HTTP).
    """
    attempts = 2 if method in IDEMPOTENT else 1
    for attempt in range(attempts):
        conn = await pool.acquire(address)
        protocol = conn.protocol
        try:
            protocol.set_response_params(
                skip_payload=method == hdrs.METH_HEAD,
                read_until_eof=True,
                auto_decompress=False,
                read_timeout=read_timeout,
                read_bufsize=_READ_BUFFER,
            )
            transport = protocol.transport
            if transport is None:
                raise aiohttp.ServerDisconnectedError()
            transport.writelines((head, body)) if body else transport.write(head)
            protocol.start_timeout()
            while True:
                message, payload = await protocol.read()
                if not 100 <= message.code < 200 or message.code == 101:
                    break
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            pool.release(conn, keep=False)
            if conn.reused and attempt + 1 < attempts:
                continue  # the endpoint had closed this idle connection: once more on a new one
            raise errors.UpstreamError(f"{address} failed: {exc!r}") from exc
        except aiohttp.ServerTimeoutError as exc:
            pool.release(conn, keep=False)
            raise UpstreamTimeout(f"{address} did not answer in time") from exc
        except (aiohttp.ClientError, http_exceptions.HttpProcessingError) as exc:
            pool.release(conn, keep=False)
            raise errors.UpstreamError(f"{address} failed: {exc!r}") from exc
        except BaseException:
            pool.release(conn, keep=False)
            raise
        return Answer(pool, conn, message, payload)
    raise AssertionError("unreachable")  # pragma: no cover
