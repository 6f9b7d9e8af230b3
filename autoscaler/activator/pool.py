"""Kept-alive HTTP/1.1 connections to endpoint addresses, and one exchange on them: the forwarder's fast path.

Each endpoint address has its own bounded pool: at most ``limit`` connections open at once (a request finding
them all busy waits, up to ``wait_timeout``, for one to come free); an idle connection is reused (the most
recently used first) and closed after ``keepalive`` seconds unused. One request at a time per connection.

Each connection is an ``upstream.Connection`` (the request written, the answer parsed by httptools). A request
sent on a reused connection that the endpoint had closed meanwhile (nothing came back) is sent once more on a
new connection when its method is idempotent, as aiohttp's client does. HEAD requests are not sent here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

from autoscaler import errors
from autoscaler.activator import endpoints, messages, timers, upstream

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


UpstreamTimeout = upstream.UpstreamTimeout


class ConnectFailed(errors.UpstreamError):
    """No connection to the endpoint could be made; nothing of the request was sent."""


@dataclass(eq=False, slots=True)
class _Connection:
    protocol: upstream.Connection
    address: endpoints.Address
    reused: bool = False
    # Due the keep-alive time after the last release; made at the first.
    idle: timers.Deadline | None = None


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
                _, protocol = await loop.create_connection(upstream.Connection, address.ip, address.port)
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
            if conn.idle is None:
                conn.idle = timers.Deadline(loop, functools.partial(self._expire, conn))
            conn.idle.set(loop.time() + self._keepalive)
            endpoint.idle.append(conn)
            self._wake(endpoint)
            return
        self._discard(conn, endpoint)

    def _discard(self, conn: _Connection, endpoint: _Pooled) -> None:
        if conn.idle is not None:
            conn.idle.cancel()
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
        """Closes ``conn``, idle for the keep-alive time since its last release, unless it is in use again
        (its next release sets the deadline again) or gone."""
        endpoint = self._endpoints.get(conn.address)
        if endpoint is not None and conn in endpoint.idle:
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

    def __init__(self, pool: Pool, conn: _Connection, head: upstream.Head) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status: int = head.status
        self.reason: str | None = head.reason
        self.raw_headers = head.raw_headers
        # The end-to-end header lines as the client gets them (no framing), rendered while parsing.
        self.block = head.block
        self._headers: CIMultiDictProxy[str] | None = None
        self.content_length = head.content_length
        self.content: messages.Body = head.body

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
        except upstream.UpstreamClosed as exc:
            pool.release(conn, keep=False)
            if conn.reused and attempt + 1 < attempts:
                continue  # the endpoint had closed this idle connection: once more on a new one
            raise errors.UpstreamError(f"{address} failed: {exc}") from exc
        except UpstreamTimeout as timeout:
            pool.release(conn, keep=False)
            raise UpstreamTimeout(f"{address} did not answer in time") from timeout
        except errors.UpstreamError as failed:
            pool.release(conn, keep=False)
            raise errors.UpstreamError(f"{address} failed: {failed}") from failed
        except BaseException:
            pool.release(conn, keep=False)
            raise
        return Answer(pool, conn, answered)
    raise AssertionError("unreachable")  # pragma: no cover
