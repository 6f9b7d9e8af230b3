"""What the proxy's HTTP/1.1 server exchanges with its handler: a parsed ``Request`` with its ``Body``, and
the answer, a whole ``Reply`` or ``STREAMED``; the fields that never cross a proxy; status lines and dates.

``http1`` parses requests into these and writes the answers; ``server.Activator`` is the handler.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import functools
import http
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, cast

from multidict import CIMultiDict, CIMultiDictProxy

# A body stops its socket being read while more than _BODY_HIGH bytes wait unread, until under _BODY_LOW.
_BODY_HIGH = 256 * 1024
_BODY_LOW = 64 * 1024
TEXT: Final = "text/plain; charset=utf-8"


class AnswerWriter(Protocol):
    """What a Request needs of its connection to write an answer piece by piece (``http1.Connection``)."""

    client: str | None

    def start_answer(
        self,
        request: Request,
        status: int,
        reason: str | None,
        headers: Sequence[tuple[str, str]],
        length: int | None,
    ) -> None: ...
    def write_body(self, chunk: bytes) -> None: ...
    def finish_answer(self) -> None: ...
    async def drain(self) -> None: ...
    def abort(self) -> None: ...


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


# Fields that describe one connection, never forwarded (RFC 9110 7.6.1), lower-cased (and so are the ones
# a Connection field lists: ``listed_tokens``).
HOP_BY_HOP: Final[frozenset[str]] = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
HOP_BY_HOP_BYTES: Final[frozenset[bytes]] = frozenset(name.encode() for name in HOP_BY_HOP)
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
    return Reply(status, (text + "\n").encode(), [("Content-Type", TEXT), *headers], close=close)


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
        connection: AnswerWriter,
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


# -- the wire form of answers ----------------------------------------------------------------------------


def render_reply(request: Request, reply: Reply) -> bytes:
    """``reply`` to ``request`` as written: head (its own Content-Length and Date) and body in one piece.
    Says ``Connection: close`` (and sets ``request.keep_alive`` False) when the connection ends after it."""
    status = reply.status
    parts = [status_line(status, reply.reason)]
    dated = False
    for name, value in reply.headers:
        lowered = name.lower()
        if lowered == "content-length":
            continue
        dated = dated or lowered == "date"
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not dated and not reply.block:
        parts.append(b"Date: %s\r\n" % http_date().encode())
    parts.append(reply.block)
    has_body = may_have_body(status)
    if has_body:
        parts.append(b"Content-Length: %d\r\n" % len(reply.body))
    # A body still arriving when the answer is given is not read on: the connection ends after it.
    if reply.close or not request.keep_alive or not request.content.is_eof():
        request.keep_alive = False
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if has_body and request.method != "HEAD":
        parts.append(reply.body)
    return b"".join(parts)


def render_stream_head(
    request: Request, status: int, reason: str | None, headers: Sequence[tuple[str, str]], length: int | None
) -> tuple[bytes, bool, bool]:
    """The head of an answer whose body follows piece by piece, and (whether a body follows, whether it is
    chunked): chunked to HTTP/1.1 clients when ``length`` is None, until the connection closes to HTTP/1.0
    ones; none for HEAD and 1xx/204/304."""
    head = [f"HTTP/1.1 {status} {reason or reason_phrase(status)}"]
    for name, value in headers:
        if name.lower() not in ("content-length", "transfer-encoding", "connection"):
            head.append(f"{name}: {value}")
    has_body = request.method != "HEAD" and may_have_body(status)
    chunked = False
    if length is not None:
        head.append(f"Content-Length: {length}")
    elif has_body and request.version != "1.0":
        head.append("Transfer-Encoding: chunked")
        chunked = True
    elif has_body:
        request.keep_alive = False  # HTTP/1.0: the body ends when the connection does
    if not request.keep_alive or not request.content.is_eof():
        request.keep_alive = False
        head.append("Connection: close")
    head.append("\r\n")
    return "\r\n".join(head).encode("latin-1"), has_body, chunked


def render_refusal(reply: Reply) -> bytes:
    """A plain-text ``reply`` that ends its connection, for what the parser refused."""
    head = (
        f"HTTP/1.1 {reply.status} {reason_phrase(reply.status)}\r\nConnection: close\r\n"
        f"Content-Type: {TEXT}\r\nContent-Length: {len(reply.body)}\r\nDate: {http_date()}\r\n\r\n"
    )
    return head.encode("latin-1") + reply.body


@functools.lru_cache(maxsize=256)
def status_line(status: int, reason: str | None) -> bytes:
    return f"HTTP/1.1 {status} {reason or reason_phrase(status)}\r\n".encode("latin-1")


def may_have_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)


@functools.lru_cache(maxsize=128)
def reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_date_cache: list[object] = [0, ""]


def http_date() -> str:
    """The Date header's value, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True)
    return cast(str, _date_cache[1])
