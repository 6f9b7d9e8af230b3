"""One kept-alive HTTP/1.1 connection to an endpoint, as an asyncio protocol: a request written, its answer
parsed by httptools (llhttp) as it arrives.

The answer's head resolves ``Connection.send``; its body follows in a ``messages.Body`` (the socket stops
being read while a large body waits unread); its end-to-end header lines are rendered while the head is
parsed. No read may wait longer than the read timeout (one deadline per connection). 1xx answers are skipped;
a body without a length ends with the connection. HEAD is not sent here: llhttp cannot be told an answer has
no body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import NamedTuple, cast

import httptools

from autoscaler import errors
from autoscaler.activator import messages, timers


class UpstreamTimeout(errors.UpstreamError):
    """The endpoint did not accept the connection or answer in time."""


class UpstreamClosed(errors.UpstreamError):
    """The endpoint closed the connection before any byte of its answer came."""


class _HeadOnly(Exception):
    """Stops parsing at the end of a head that has no body to follow."""


class Head(NamedTuple):
    status: int
    reason: str | None
    raw_headers: list[tuple[bytes, bytes]]
    block: bytes
    content_length: int | None
    body: messages.Body


class Connection(asyncio.Protocol):
    """One connection to an endpoint: one request at a time written, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.should_close = False
        self._head: asyncio.Future[Head] | None = None
        self._body: messages.Body | None = None
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
        self._head_only = False  # a callback stopped the parser after a head with no body
        self._loop = asyncio.get_running_loop()
        # The read timeout: an exchange fails when nothing was read for ``_timeout`` seconds.
        self._read_deadline = timers.Deadline(self._loop, self._check_timeout)
        self._timeout = 0.0
        self._last_read = 0.0

    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- one exchange ------------------------------------------------------------------------------

    async def send(self, data: Iterable[bytes], *, read_timeout: float) -> Head:
        """Writes a request and returns its answer's head; the body follows in ``Head.body``.

        Raises UpstreamClosed (nothing came back), UpstreamTimeout, or UpstreamError.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            raise UpstreamClosed("the connection was closed")
        head: asyncio.Future[Head] = self._loop.create_future()
        self._head = head
        self._received = False
        self._timeout = read_timeout
        self._last_read = now = self._loop.time()
        self._read_deadline.set(now + read_timeout)
        transport.writelines(data)
        try:
            return await head
        finally:
            self._head = None

    def _check_timeout(self) -> None:
        """Fails the exchange when nothing was read for the read timeout (bytes read meanwhile move it on:
        ``data_received`` only notes when)."""
        if self._loop.time() - self._last_read < self._timeout:
            self._read_deadline.set(self._last_read + self._timeout)
            return
        self._fail(UpstreamTimeout(f"no answer for {self._timeout:g}s"))

    def _done(self) -> None:
        self._read_deadline.clear()

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
        self._read_deadline.cancel()
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
        except httptools.HttpParserCallbackError:
            # Not told by the error's __context__: CPython replaces it with any exception being handled.
            if not self._head_only:
                raise
            self._head_only = False
            self._parser = httptools.HttpResponseParser(self)
        except httptools.HttpParserError as malformed:
            self._fail(errors.UpstreamError(f"the endpoint's answer is not HTTP/1.1: {malformed}"))

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
        elif lowered not in messages.HOP_BY_HOP_BYTES and not lowered.startswith(b"proxy-"):
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
        body = self._body = messages.Body(self.throttle, eof=no_body)
        if self._head is not None and not self._head.done():
            declared = int(length) if length is not None and length.isdigit() else None
            reason = self._reason.decode("latin-1") or None
            block = self._block
            if self._connection_values:  # rare: fields the Connection field names are hop-by-hop too
                listed = messages.listed_tokens(self._connection_values)
                block = [
                    line for line, name in zip(block, self._block_names, strict=True) if name not in listed
                ]
            head = Head(status, reason, self._headers, b"".join(block), declared, body)
            self._head.set_result(head)
        if no_body:
            self._on_complete(keep=self._parser.should_keep_alive())
            self._head_only = True
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
