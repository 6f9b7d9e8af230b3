"""The proxy's HTTP/1.1 server: client connections, requests parsed by httptools (llhttp), answers written.

One ``Connection`` per client connection parses requests as they arrive and hands them, one at a time and in
order (pipelined requests wait their turn), to the handler, which returns a ``Reply`` to be written whole, or
``STREAMED`` after writing the answer itself through ``Request.start``/``write``/``finish``. Every request
gets exactly one answer, or none when the client went away (its handler is cancelled then).

The bounds of ``guard.ConnectionLimits``:

- a request's line and headers must arrive within ``header_timeout`` of its first byte (or of the
  connection's opening): otherwise 408 and the connection closes, never reaching a target;
- one client address may hold at most ``max_connections_per_client`` open connections: more are answered
  503 and closed at once;
- a request line over ``max_line_size`` bytes, a header field over ``max_field_size`` or more than
  ``max_headers`` fields is answered 431; a request the parser refuses (a garbage request line, a duplicate
  Host, a bad Content-Length, ...) 400; both are logged at info without a traceback and counted;
- a kept-alive connection idle for ``keepalive_timeout`` is closed; after an answer that leaves a request
  body unread, what the client still sends is read and dropped for ``lingering_time``, then it is closed.

A body is read through ``Request.content`` (``Body``), which stops reading from the socket while more than
``_BODY_HIGH`` bytes wait unread; ``Expect: 100-continue`` is answered when the handler first reads the body.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import functools
import http
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

import httptools
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from autoscaler.activator import guard
from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger(__name__)

_BODY_HIGH = 256 * 1024
_BODY_LOW = 64 * 1024
# Requests parsed ahead of the one being answered (pipelining) before the socket stops being read.
_MAX_PIPELINED = 16
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TEXT = "text/plain; charset=utf-8"


class TooLarge(Exception):
    """A request line or header field over its bound (answered 431)."""


class Malformed(Exception):
    """A request the parser accepted but HTTP refuses (answered 400)."""


class ClientGone(ConnectionError):
    """The client closed its connection before its request body was read."""


class BodyMalformed(Exception):
    """The request body broke its framing (a bad chunk) while its handler was reading it."""


@dataclass(slots=True)
class Reply:
    """A whole answer, written with its Content-Length in one write; ``close`` ends the connection."""

    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    reason: str | None = None
    close: bool = False
    # Header lines already rendered (each ending CRLF; no framing headers), written after ``headers``.
    block: bytes = b""


class _Streamed:
    """What a handler returns when it wrote the answer itself (``Request.start`` ... ``finish``)."""

    def __repr__(self) -> str:
        return "STREAMED"


STREAMED: Final = _Streamed()
Answer = Reply | _Streamed
Handler = Callable[["Request"], Awaitable[Answer]]


# Fields that describe one connection, never forwarded (RFC 9110 7.6.1), lower-cased; and those the
# Connection fields list.
HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
HOP_BY_HOP_BYTES: Final = frozenset(name.encode() for name in HOP_BY_HOP)
_NONE_LISTED: Final[frozenset[bytes]] = frozenset()


def listed_tokens(values: Sequence[bytes]) -> frozenset[bytes]:
    """The lower-cased names that Connection field values list."""
    if not values:
        return _NONE_LISTED
    return frozenset(token.strip().lower() for value in values for token in value.split(b","))


def text_reply(
    status: int, text: str, *, headers: Sequence[tuple[str, str]] = (), close: bool = False
) -> Reply:
    """A plain-text answer of ``text`` and a newline."""
    return Reply(status, (text + "\n").encode(), [("Content-Type", _TEXT), *headers], close=close)


class Body:
    """A body as it arrives (a request's from the client, a response's from an endpoint): ``read`` returns
    the next bytes, ``b""`` at its end. ``throttle(reason, paused)`` is told to stop and resume reading the
    socket while more than ``_BODY_HIGH`` bytes wait unread; ``on_first_read`` runs before the first read."""

    __slots__ = ("_chunks", "_eof", "_error", "_on_first_read", "_size", "_throttle", "_waiter")

    def __init__(
        self,
        throttle: Callable[[str, bool], None] | None = None,
        *,
        on_first_read: Callable[[], None] | None = None,
        eof: bool = False,
    ) -> None:
        self._throttle = throttle
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = eof
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_first_read = on_first_read

    def is_eof(self) -> bool:
        """Whether the whole body arrived (it may still wait unread)."""
        return self._eof

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if self._size > _BODY_HIGH and self._throttle is not None:
            self._throttle("body", True)

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """Reads from now on raise ``error`` (once what arrived before it was read)."""
        if not self._eof:
            self._error = error
            self._wake()

    async def read(self, limit: int = -1) -> bytes:
        """Up to ``limit`` bytes (all that arrived when -1), waiting for some; ``b""`` at the end."""
        if self._on_first_read is not None:
            first, self._on_first_read = self._on_first_read, None
            first()
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if limit < 0 or limit >= self._size:
            data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks.clear()
        else:
            parts: list[bytes] = []
            wanted = limit
            while wanted:
                chunk = self._chunks.popleft()
                if len(chunk) > wanted:
                    self._chunks.appendleft(chunk[wanted:])
                    chunk = chunk[:wanted]
                parts.append(chunk)
                wanted -= len(chunk)
            data = b"".join(parts)
        self._size -= len(data)
        if self._size < _BODY_LOW and self._throttle is not None:
            self._throttle("body", False)
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; asyncio.IncompleteReadError when the body ends before."""
        chunks = self._chunks
        if self._on_first_read is None and len(chunks) == 1 and len(chunks[0]) == n:
            # All of it arrived in one piece (a small answer): taken without waiting.
            self._size = 0
            data = chunks.popleft()
            if self._throttle is not None:
                self._throttle("body", False)
            return data
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = await self.read(n - got)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        """The rest of the body, in pieces of at most ``size`` bytes."""
        while chunk := await self.read(size):
            yield chunk

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Request:
    """One parsed request: its line, its header fields as sent (``raw_headers``; ``headers`` decodes them as
    Latin-1 on first use) and its body."""

    __slots__ = (
        "_connection",
        "_headers",
        "chunked",
        "connection_listed",
        "content",
        "content_length",
        "host",
        "keep_alive",
        "method",
        "raw_headers",
        "raw_path",
        "remote",
        "started",
        "version",
    )
    scheme: Final = "http"

    def __init__(
        self,
        connection: Connection,
        *,
        method: str,
        raw_path: str,
        version: str,
        raw_headers: list[tuple[bytes, bytes]],
        host: str | None,
        content_length: int | None,
        chunked: bool,
        connection_listed: frozenset[bytes],
        keep_alive: bool,
        content: Body,
    ) -> None:
        self._connection = connection
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.raw_headers = raw_headers
        self._headers: CIMultiDictProxy[str] | None = None
        self.host = host
        self.content_length = content_length
        self.chunked = chunked
        # The lower-cased field names the Connection fields list (hop-by-hop for this connection only).
        self.connection_listed = connection_listed
        self.keep_alive = keep_alive
        self.content = content
        self.remote: str | None = connection.client
        self.started = False

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(
                CIMultiDict(
                    (name.decode("latin-1"), value.decode("latin-1")) for name, value in self.raw_headers
                )
            )
        return self._headers

    @property
    def body_exists(self) -> bool:
        """Whether the request frames a body (a Content-Length over 0, or chunked)."""
        return self.chunked or (self.content_length is not None and self.content_length > 0)

    # -- writing an answer piece by piece (the handler then returns STREAMED) ----------------------

    async def start(
        self, status: int, reason: str | None, headers: Sequence[tuple[str, str]], *, length: int | None
    ) -> None:
        """Writes the answer's head. ``length`` None: the body follows chunked (HTTP/1.1 clients) or until
        the connection closes (HTTP/1.0); a HEAD request or a 1xx/204/304 answer gets no body either way."""
        self.started = True
        self._connection.start_answer(self, status, reason, headers, length)
        await self._connection.drain()

    async def write(self, chunk: bytes) -> None:
        if chunk:
            self._connection.write_body(chunk)
            await self._connection.drain()

    async def finish(self) -> None:
        self._connection.finish_answer()
        await self._connection.drain()

    def abort(self) -> None:
        """Closes the client connection at once (an answer cut short must not look whole)."""
        self._connection.abort()


class Server:
    """The protocol factory of one listener; the connections it made, for shutting down."""

    def __init__(self, handler: Handler, *, guard: guard.Guard) -> None:
        self.handler = handler
        self.guard = guard
        self.connections: set[Connection] = set()
        self._none_open = asyncio.Event()
        self._none_open.set()

    def __call__(self) -> Connection:
        return Connection(self)

    def opened(self, connection: Connection) -> None:
        self.connections.add(connection)
        self._none_open.clear()

    def closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._none_open.set()

    async def shutdown(self, timeout: float) -> None:
        """Closes idle connections now, lets answers in progress finish for up to ``timeout``, then closes
        every connection."""
        for connection in list(self.connections):
            connection.close_when_idle()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._none_open.wait()
        for connection in list(self.connections):
            connection.abort()


class Connection(asyncio.Protocol):
    """One client connection: parsing, the bounds of the module docstring, one answer per request."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._limits = server.guard.limits
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self.client: str | None = None
        self._admitted = False
        self._closing = False
        self._answered_all = False  # an answer that closes the connection was written: ignore the rest
        self._paused: set[str] = set()
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # Parsed requests waiting their turn; a Reply: the refusal of what could not be parsed after them.
        self._pending: collections.deque[Request | Reply] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._current: Request | None = None  # the request being answered
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._deadline = 0.0
        # The request being parsed.
        self._in_head = False
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._host: bytes | None = None
        self._hosts = 0
        self._length: bytes | None = None
        self._chunked = False
        self._expects = False
        self._connection_values: list[bytes] = []
        self._head_size = 0
        self._parsing: Request | None = None
        self._stream_chunked = False
        self._stream_body = True

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.client = client
        self._server.opened(self)
        if not self._server.guard.admit(client):
            limit = self._server.guard.limits.max_connections_per_client
            log.info(ActivatorLog.CONNECTION_REFUSED, client=client, limit=limit)
            self._answer_and_close(
                503, "Service Unavailable", f"more than {limit} open connections from {client}"
            )
            return
        self._admitted = True
        self._arm("header", self._limits.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timer()
        self._server.closed(self)
        if self._admitted:
            self._server.guard.leave(self.client or "")
            self._admitted = False
        gone = ClientGone("the client closed the connection")
        if self._parsing is not None:
            self._parsing.content.fail(gone)
        for waiting in self._pending:
            if isinstance(waiting, Request):
                waiting.content.fail(gone)
        self._pending.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(gone)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._answered_all or self._closing:
            return  # lingering after a closing answer: dropped unread
        if not self._in_head and self._parsing is None and self._timer_kind != "header":
            self._arm("header", self._limits.header_timeout)  # the first byte of a further request
        try:
            self._parser.feed_data(data)
            if self._in_head:
                self._head_size += len(data)
                limits = self._limits
                if self._head_size > limits.max_line_size + limits.max_headers * limits.max_field_size:
                    raise TooLarge("request head")
        except httptools.HttpParserUpgrade:
            # An Upgrade request: answered as a plain one (the activator forwards no upgrades); the bytes
            # after its head are not HTTP, so the connection closes after the answer.
            self._stop_reading_requests()
        except TooLarge:
            self._refuse(431, self._too_large())
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, TooLarge):
                self._refuse(431, self._too_large())
            elif isinstance(cause, Malformed):
                self._refuse(400, f"malformed request: {cause}")
            else:
                raise
        except httptools.HttpParserError as exc:
            self._refuse(400, "malformed request: " + " ".join(str(exc).split())[:200])

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url.clear()
        self._headers = []
        self._host = self._length = None
        self._hosts = 0
        self._chunked = self._expects = False
        self._connection_values = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_line_size:
            raise TooLarge("request line")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 2 > self._limits.max_field_size:
            raise TooLarge("header field")
        if len(self._headers) >= self._limits.max_headers:
            raise TooLarge("header fields")
        self._headers.append((name, value))
        # The fields the activator itself reads, picked up here so that the rest need not be decoded.
        lowered = name.lower()
        if lowered == b"host":
            self._host = value
            self._hosts += 1
        elif lowered == b"content-length":
            self._length = value
        elif lowered == b"transfer-encoding":
            self._chunked = True
        elif lowered == b"expect":
            self._expects = value.lower() == b"100-continue"
        elif lowered == b"connection":
            self._connection_values.append(value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        parser = self._parser
        if self._hosts > 1:
            raise Malformed("more than one Host header")
        length = self._length
        content = Body(self.throttle, on_first_read=self._send_continue if self._expects else None)
        request = Request(
            self,
            method=parser.get_method().decode("latin-1"),
            raw_path=self._url.decode("latin-1"),
            version=parser.get_http_version(),
            raw_headers=self._headers,
            host=None if self._host is None else self._host.decode("latin-1"),
            content_length=int(length) if length is not None and length.isdigit() else None,
            chunked=self._chunked,
            connection_listed=listed_tokens(self._connection_values),
            keep_alive=parser.should_keep_alive(),
            content=content,
        )
        self._parsing = request
        self._pending.append(request)
        if len(self._pending) > _MAX_PIPELINED:
            self.throttle("pipeline", True)
        if self._task is None:
            self._next()

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.content.feed(body)

    def on_message_complete(self) -> None:
        request, self._parsing = self._parsing, None
        if request is None:
            return
        request.content.feed_eof()
        if not request.keep_alive:
            self._stop_reading_requests()

    # -- answering, one request at a time ----------------------------------------------------------

    def _next(self) -> None:
        if not self._pending:
            self._task = self._current = None
            self.throttle("pipeline", False)
            if self._parsing is None and not self._in_head and not self._closing:
                self._arm("keepalive", self._limits.keepalive_timeout)
            return
        waiting = self._pending.popleft()
        if isinstance(waiting, Reply):
            self._task = self._current = None
            self._answer_raw(waiting)
            return
        request = self._current = waiting
        self._disarm_keepalive()
        self._task = self._loop.create_task(self._answer(request))

    async def _answer(self, request: Request) -> None:
        try:
            answer = await self._server.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A defect: still one counted answer, and the traceback to find it.
            log.exception(ActivatorLog.REQUEST_FAILED)
            self._server.guard.metrics.response(None, 500)
            if request.started:
                self.abort()
                return
            answer = text_reply(500, "internal error in the activator", close=True)
        if self._transport is None or self._transport.is_closing():
            return
        if isinstance(answer, Reply):
            self._write_reply(request, answer)
        if self._closing or self._transport is None or self._transport.is_closing():
            return
        if not request.keep_alive:  # the answer said Connection: close
            self._close_after_answer(lingering=not request.content.is_eof())
            return
        # A body that came whole but was left unread is dropped; the socket is read again for what follows.
        self.throttle("body", False)
        self._next()

    def _write_reply(self, request: Request, reply: Reply) -> None:
        status = reply.status
        parts = [_status_line(status, reply.reason)]
        dated = False
        for name, value in reply.headers:
            lowered = name.lower()
            if lowered == "content-length":
                continue
            dated = dated or lowered == "date"
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not dated and not reply.block:
            parts.append(b"Date: %s\r\n" % _date().encode())
        parts.append(reply.block)
        has_body = _may_have_body(status)
        if has_body:
            parts.append(b"Content-Length: %d\r\n" % len(reply.body))
        # A body still arriving when the answer is given is not read on: the connection ends after it.
        if reply.close or not request.keep_alive or not request.content.is_eof():
            request.keep_alive = False
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if has_body and request.method != "HEAD":
            parts.append(reply.body)
        self.write(b"".join(parts))

    def start_answer(
        self,
        request: Request,
        status: int,
        reason: str | None,
        headers: Sequence[tuple[str, str]],
        length: int | None,
    ) -> None:
        head = [f"HTTP/1.1 {status} {reason or _reason(status)}"]
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                head.append(f"{name}: {value}")
        self._stream_body = request.method != "HEAD" and _may_have_body(status)
        self._stream_chunked = False
        if length is not None:
            head.append(f"Content-Length: {length}")
        elif self._stream_body and request.version != "1.0":
            head.append("Transfer-Encoding: chunked")
            self._stream_chunked = True
        elif self._stream_body:
            request.keep_alive = False  # HTTP/1.0: the body ends when the connection does
        if not request.keep_alive or not request.content.is_eof():
            request.keep_alive = False
            head.append("Connection: close")
        head.append("\r\n")
        self.write("\r\n".join(head).encode("latin-1"))

    def write_body(self, chunk: bytes) -> None:
        if not self._stream_body:
            return
        if self._stream_chunked:
            self.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            self.write(chunk)

    def finish_answer(self) -> None:
        if self._stream_body and self._stream_chunked:
            self.write(b"0\r\n\r\n")

    def _send_continue(self) -> None:
        if self._current is None or not self._current.started:  # never inside an answer already begun
            self.write(_CONTINUE)

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        if self._transport is None:
            raise ClientGone("the client closed the connection")
        if not self._write_paused:
            return
        self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_when_idle(self) -> None:
        """Closes now when no request is being answered or parsed; else after the answer in progress."""
        self._stop_reading_requests()
        if self._task is None and self._parsing is None:
            self.abort()

    def throttle(self, reason: str, paused: bool) -> None:
        """Stops reading the socket while any reason holds (a body waiting unread, pipelined requests)."""
        if not paused and not self._paused:
            return
        was = bool(self._paused)
        if paused:
            self._paused.add(reason)
        else:
            self._paused.discard(reason)
        transport = self._transport
        if transport is None or was == bool(self._paused) or transport.is_closing():
            return
        if self._paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # -- closing and refusing ------------------------------------------------------------------------

    def _stop_reading_requests(self) -> None:
        """No request after the ones already parsed is read: the connection closes after the last one's
        answer (the ones before it are answered as they asked)."""
        self._answered_all = True
        last = self._pending[-1] if self._pending else self._current
        if isinstance(last, Request):
            last.keep_alive = False

    def _close_after_answer(self, *, lingering: bool) -> None:
        self._closing = True
        self._disarm()
        transport = self._transport
        if transport is None:
            return
        if not lingering:
            transport.close()
            return
        # Closing at once with unread data would reset the connection and the client might never read the
        # answer: end the sending side, drop what still comes, close after the lingering time.
        self.throttle("body", False)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(self._limits.lingering_time, transport.close)

    def _refuse(self, status: int, text: str) -> None:
        """Answers a request that cannot be parsed, after the answers due before it, and closes. A body
        that breaks while its request's handler runs fails that handler's reads instead: it answers."""
        parsing = self._parsing
        if parsing is not None and parsing is self._current:
            # The handler answers (400 for the activator), and counts and logs it with its target.
            parsing.content.fail(BodyMalformed(text))
            self._parsing = None
            self._in_head = False
            self._stop_reading_requests()
            return
        self._server.guard.metrics.response(None, status)
        log.info(ActivatorLog.REQUEST_MALFORMED, status=status, client=self.client, reason=text)
        reply = text_reply(status, text, close=True)
        if self._parsing is not None:
            self._parsing.content.fail(ClientGone("the request could not be parsed"))
            if self._parsing in self._pending:
                self._pending.remove(self._parsing)
            self._parsing = None
        self._in_head = False
        self._answered_all = True
        if self._task is None and not self._pending:
            self._answer_raw(reply)
            return
        self._pending.append(reply)

    def _answer_raw(self, reply: Reply) -> None:
        head = (
            f"HTTP/1.1 {reply.status} {_reason(reply.status)}\r\nConnection: close\r\n"
            f"Content-Type: {_TEXT}\r\nContent-Length: {len(reply.body)}\r\nDate: {_date()}\r\n\r\n"
        )
        self.write(head.encode("latin-1") + reply.body)
        self._close_after_answer(lingering=True)

    def _answer_and_close(self, status: int, reason: str, text: str) -> None:
        self._server.guard.metrics.response(None, status)
        self._answered_all = True
        self.write(guard.raw_response(status, reason, text))
        self._close_after_answer(lingering=True)

    def _too_large(self) -> str:
        limits = self._limits
        return (
            f"request line or header fields too large: at most {limits.max_field_size} bytes per line "
            f"and {limits.max_headers} header fields"
        )

    # -- the timers ----------------------------------------------------------------------------------

    # One timer per connection at most, never cancelled on the request path: arming only moves the deadline
    # (the timer re-arms itself when it fires early), so a busy kept-alive connection creates no timers.

    def _arm(self, kind: str, delay: float) -> None:
        loop = self._loop
        self._timer_kind = kind
        self._deadline = deadline = loop.time() + delay
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._timed_out)

    def _disarm(self) -> None:
        self._timer_kind = ""

    def _cancel_timer(self) -> None:
        self._timer_kind = ""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _disarm_keepalive(self) -> None:
        if self._timer_kind == "keepalive":
            self._disarm()

    def _timed_out(self) -> None:
        self._timer = None
        kind = self._timer_kind
        if not kind:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._timed_out)
            return
        self._timer_kind = ""
        if self._transport is None or self._transport.is_closing():
            return
        if kind == "keepalive":
            if self._task is None and not self._in_head and self._parsing is None:
                self._transport.close()
            return
        timeout = self._limits.header_timeout
        log.info(ActivatorLog.REQUEST_STALLED, client=self.client, stage="headers", timeout=timeout)
        self._answer_and_close(
            408, "Request Timeout", f"request line and headers not received within {timeout:g}s"
        )


@functools.lru_cache(maxsize=256)
def _status_line(status: int, reason: str | None) -> bytes:
    return f"HTTP/1.1 {status} {reason or _reason(status)}\r\n".encode("latin-1")


def _may_have_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)


@functools.lru_cache(maxsize=128)
def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_date_cache: list[object] = [0, ""]


def _date() -> str:
    """The Date header's value, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True)
    return cast(str, _date_cache[1])
