"""Kept-alive HTTP/1.1 connections to endpoint addresses, and one exchange on them: the forwarder's fast path.

Each endpoint address has its own bounded pool: at most ``limit`` connections open at once (a request finding
them all busy waits, up to ``wait_timeout``, for one to come free); an idle connection is reused (the most
recently used first) and closed after ``keepalive`` seconds unused. One request at a time per connection.

The request head is written from headers the activator's server already parsed and checked; the answer is
parsed by httptools (llhttp) as it arrives, its body read through an ``http1.Body`` (the socket stops being
read while a large body waits unread), and no read may wait longer than the read timeout. A request sent on a
reused connection that the endpoint had closed meanwhile (nothing came back) is sent once more on a new
connection when its method is idempotent, as aiohttp's client does. HEAD requests are not sent here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from autoscaler import errors
from autoscaler.activator import endpoints, http1

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class ConnectFailed(errors.UpstreamError):
    """No connection to the endpoint could be made; nothing of the request was sent."""


class UpstreamTimeout(errors.UpstreamError):
    """The endpoint did not accept the connection or answer in time."""


class UpstreamClosed(errors.UpstreamError):
    """The endpoint closed the connection before any byte of its answer came."""


class _HeadOnly(Exception):
    """Stops parsing at the end of a head that has no body to follow."""


class _Head(NamedTuple):
    status: int
    reason: str | None
    raw_headers: list[tuple[bytes, bytes]]
    block: bytes
    content_length: int | None
    body: http1.Body


class _Endpoint(asyncio.Protocol):
    """One connection to an endpoint: one request at a time written, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.should_close = False
        self._head: asyncio.Future[_Head] | None = None
        self._body: http1.Body | None = None
        self._reason = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._length: bytes | None = None
        self._chunked = False
        self._connection_values: list[bytes] = []
        self._block: list[bytes] = []
        self._block_names: list[bytes] = []
        self._status = 0
        self._until_eof = False
        self._received = False
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._last_read = 0.0
        self._waiting = False
        self._loop = asyncio.get_running_loop()

    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- one exchange ------------------------------------------------------------------------------

    async def send(self, data: Iterable[bytes], *, read_timeout: float) -> _Head:
        """Writes a request and returns its answer's head; the body follows in ``_Head.body``.

        Raises UpstreamClosed (nothing came back), UpstreamTimeout, or UpstreamError.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            raise UpstreamClosed("the connection was closed")
        head: asyncio.Future[_Head] = self._loop.create_future()
        self._head = head
        self._received = False
        self._timeout = read_timeout
        self._last_read = now = self._loop.time()
        self._waiting = True
        if self._timer is None or self._timer.when() > now + read_timeout:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(now + read_timeout, self._check_timeout)
        transport.writelines(data)
        try:
            return await head
        finally:
            self._head = None

    # One timer per connection, kept across exchanges: it re-arms itself while bytes come or an exchange
    # started after it was set, so that an exchange creates no timer of its own.

    def _check_timeout(self) -> None:
        """Fails the exchange when nothing was read for the read timeout."""
        self._timer = None
        if not self._waiting:
            return
        idle = self._loop.time() - self._last_read
        if idle < self._timeout:
            self._timer = self._loop.call_later(self._timeout - idle, self._check_timeout)
            return
        self._fail(UpstreamTimeout(f"no answer for {self._timeout:g}s"))

    def _done(self) -> None:
        self._waiting = False

    def _fail(self, error: errors.UpstreamError) -> None:
        self._done()
        self.should_close = True
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        if self._body is not None:
            self._body.fail(error)
            self._body = None
        self.close()

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.should_close = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._body is not None and self._until_eof:
            self._on_complete()  # a body without a length ends with the connection
            return
        if self._head is not None and not self._received:
            self._fail(UpstreamClosed(f"the endpoint closed the connection: {exc!r}" if exc else "closed"))
        elif self._head is not None or self._body is not None:
            self._fail(errors.UpstreamError("the endpoint closed the connection mid-answer"))

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._last_read = self._loop.time()
        if self._head is None and self._body is None:
            self._fail(errors.UpstreamError("the endpoint sent bytes no request asked for"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _HeadOnly):
                raise
            self._parser = httptools.HttpResponseParser(self)
        except httptools.HttpParserError as exc:
            self._fail(errors.UpstreamError(f"the endpoint's answer is not HTTP/1.1: {exc}"))

    def throttle(self, reason: str, paused: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reason.clear()
        self._headers = []
        self._length = None
        self._chunked = False
        self._connection_values = []
        self._block = []
        self._block_names = []

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length":
            self._length = value
        elif lowered == b"transfer-encoding":
            self._chunked = self._chunked or b"chunked" in value.lower()
        elif lowered == b"connection":
            self._connection_values.append(value)
        elif lowered not in http1.HOP_BY_HOP_BYTES and not lowered.startswith(b"proxy-"):
            # The end-to-end fields as the client gets them, but the framing (the activator's own).
            self._block.append(b"%s: %s\r\n" % (name, value))
            self._block_names.append(lowered)

    def on_headers_complete(self) -> None:
        status = self._status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim answer: the final one follows
        no_body = status in (204, 304) or status < 200
        length = self._length
        self._until_eof = not no_body and not self._chunked and length is None
        body = self._body = http1.Body(self.throttle, eof=no_body)
        if self._head is not None and not self._head.done():
            declared = int(length) if length is not None and length.isdigit() else None
            reason = self._reason.decode("latin-1") or None
            block = self._block
            if self._connection_values:  # rare: fields the Connection field names are hop-by-hop too
                listed = http1.listed_tokens(self._connection_values)
                block = [
                    line for line, name in zip(block, self._block_names, strict=True) if name not in listed
                ]
            head = _Head(status, reason, self._headers, b"".join(block), declared, body)
            self._head.set_result(head)
        if no_body:
            self._on_complete(keep=self._parser.should_keep_alive())
            raise _HeadOnly()

    def on_body(self, data: bytes) -> None:
        if self._body is not None:
            self._body.feed(data)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200 and self._status != 101:
            return
        self._on_complete(keep=self._parser.should_keep_alive())

    def _on_complete(self, *, keep: bool = False) -> None:
        self._done()
        self.should_close = self.should_close or not keep
        body, self._body = self._body, None
        if body is not None:
            body.feed_eof()


@dataclass(eq=False, slots=True)
class _Connection:
    protocol: _Endpoint
    address: endpoints.Address
    reused: bool = False
    # The keep-alive timer: set once, re-armed when it fires while the connection was used meanwhile.
    idle: asyncio.TimerHandle | None = None
    released_at: float = 0.0


@dataclass(slots=True)
class _Pooled:
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
        self._endpoints: dict[endpoints.Address, _Pooled] = {}
        self._closed = False

    def open_connections(self, address: endpoints.Address) -> int:
        found = self._endpoints.get(address)
        return found.open if found is not None else 0

    def idle(self, address: endpoints.Address) -> _Connection | None:
        """An idle connection to ``address`` ready for a request, taken without waiting; None if none."""
        endpoint = self._endpoints.get(address)
        while endpoint is not None and endpoint.idle:
            conn = endpoint.idle.pop()
            if conn.protocol.is_connected() and not conn.protocol.should_close:
                conn.reused = True
                return conn
            self._discard(conn, endpoint)
        return None

    async def acquire(self, address: endpoints.Address) -> _Connection:
        """A connection to ``address``: an idle one, a new one within the bound, or the next to come free.

        Raises ConnectFailed (refused, unreachable) or UpstreamTimeout (connecting, or waiting for one).
        """
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            endpoint = self._endpoints[address] = _Pooled()
        while True:
            while endpoint.idle:
                conn = endpoint.idle.pop()
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

    async def _connect(self, address: endpoints.Address, endpoint: _Pooled) -> _Connection:
        loop = asyncio.get_running_loop()
        endpoint.open += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(_Endpoint, address.ip, address.port)
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
            loop = asyncio.get_running_loop()
            conn.released_at = now = loop.time()
            if conn.idle is None:
                conn.idle = loop.call_at(now + self._keepalive, self._expire, conn)
            endpoint.idle.append(conn)
            self._wake(endpoint)
            return
        self._discard(conn, endpoint)

    def _discard(self, conn: _Connection, endpoint: _Pooled) -> None:
        if conn.idle is not None:
            conn.idle.cancel()
            conn.idle = None
        conn.protocol.close()
        self._left(conn.address, endpoint)

    def _left(self, address: endpoints.Address, endpoint: _Pooled) -> None:
        """One connection of ``address`` is gone: a waiter may open one, an unused pool is dropped."""
        endpoint.open -= 1
        if not self._wake(endpoint) and not endpoint.open and self._endpoints.get(address) is endpoint:
            del self._endpoints[address]

    def _wake(self, endpoint: _Pooled) -> bool:
        while endpoint.waiters:
            waiter = endpoint.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def _expire(self, conn: _Connection) -> None:
        """Closes ``conn`` when it has been idle for the keep-alive time; else waits for the rest of it."""
        conn.idle = None
        endpoint = self._endpoints.get(conn.address)
        if endpoint is None or conn not in endpoint.idle:
            return  # in use (its release sets the timer again) or gone
        loop = asyncio.get_running_loop()
        due = conn.released_at + self._keepalive
        if loop.time() < due:
            conn.idle = loop.call_at(due, self._expire, conn)
            return
        endpoint.idle.remove(conn)
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

    __slots__ = (
        "_conn",
        "_headers",
        "_pool",
        "block",
        "content",
        "content_length",
        "raw_headers",
        "reason",
        "status",
    )

    def __init__(self, pool: Pool, conn: _Connection, head: _Head) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status: int = head.status
        self.reason: str | None = head.reason
        self.raw_headers = head.raw_headers
        # The end-to-end header lines as the client gets them (no framing), rendered while parsing.
        self.block = head.block
        self._headers: CIMultiDictProxy[str] | None = None
        self.content_length = head.content_length
        self.content: http1.Body = head.body

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The fields decoded as Latin-1 (on first use)."""
        if self._headers is None:
            decoded = ((name.decode("latin-1"), value.decode("latin-1")) for name, value in self.raw_headers)
            self._headers = CIMultiDictProxy(CIMultiDict(decoded))
        return self._headers

    def release(self) -> None:
        """Back to the pool when the whole body was read and the endpoint keeps the connection, else
        closed; a second call does nothing."""
        conn, self._conn = self._conn, None
        if conn is not None:
            keep = self.content.is_eof() and not conn.protocol.should_close
            self._pool.release(conn, keep=keep)


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
    if method == "HEAD":
        raise ValueError("HEAD requests are not sent over the pool (their answers have no body to parse)")
    attempts = 2 if method in IDEMPOTENT else 1
    for attempt in range(attempts):
        conn = pool.idle(address) or await pool.acquire(address)
        try:
            answered = await conn.protocol.send((head, body) if body else (head,), read_timeout=read_timeout)
        except UpstreamClosed as exc:
            pool.release(conn, keep=False)
            if conn.reused and attempt + 1 < attempts:
                continue  # the endpoint had closed this idle connection: once more on a new one
            raise errors.UpstreamError(f"{address} failed: {exc}") from exc
        except UpstreamTimeout as exc:
            pool.release(conn, keep=False)
            raise UpstreamTimeout(f"{address} did not answer in time") from exc
        except errors.UpstreamError as exc:
            pool.release(conn, keep=False)
            raise errors.UpstreamError(f"{address} failed: {exc}") from exc
        except BaseException:
            pool.release(conn, keep=False)
            raise
        return Answer(pool, conn, answered)
    raise AssertionError("unreachable")  # pragma: no cover
