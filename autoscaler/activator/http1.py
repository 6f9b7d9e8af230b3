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
- a head over its bounds (``heads``) is answered 431, one the parser refuses (a garbage request line, a
  duplicate Host, ...) 400, both logged at info without a traceback and counted;
- a kept-alive connection idle for ``keepalive_timeout`` is closed; after an answer that leaves a request
  body unread, what the client still sends is read and dropped for ``lingering_time``, then it is closed.

A body is read through ``Request.content``, which stops the socket being read while more than 256 KiB wait
unread; ``Expect: 100-continue`` is answered when the handler first reads it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from typing import cast

import httptools
import structlog

from autoscaler.activator import guard, timers
from autoscaler.activator.heads import HeadParsing, Malformed, TooLarge
from autoscaler.activator.messages import (
    Body,
    BodyMalformed,
    ClientGone,
    Handler,
    Reply,
    Request,
    listed_tokens,
    render_refusal,
    render_reply,
    render_stream_head,
    text_reply,
)
from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger(__name__)

# Requests parsed ahead of the one being answered (pipelining) before the socket stops being read.
_MAX_PIPELINED = 16
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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


class Connection(HeadParsing, asyncio.Protocol):
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
        # The header timeout or the keep-alive timeout, whichever runs ("" : none).
        self._timer_kind = ""
        self._deadline = timers.Deadline(self._loop, self._timed_out)
        self._begin_heads()
        self._parsing: Request | None = None  # the request whose body is being parsed
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
        except httptools.HttpParserCallbackError:
            cause, self._refusal = self._refusal, None
            if isinstance(cause, TooLarge):
                self._refuse(431, self._too_large())
            elif isinstance(cause, Malformed):
                self._refuse(400, f"malformed request: {cause}")
            else:
                raise
        except httptools.HttpParserError as malformed:
            self._refuse(400, "malformed request: " + " ".join(str(malformed).split())[:200])

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        parser = self._parser
        if self._hosts > 1:
            self._refuse_head(Malformed("more than one Host header"))
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
        self.write(render_reply(request, reply))

    def start_answer(
        self,
        request: Request,
        status: int,
        reason: str | None,
        headers: Sequence[tuple[str, str]],
        length: int | None,
    ) -> None:
        head, self._stream_body, self._stream_chunked = render_stream_head(
            request, status, reason, headers, length
        )
        self.write(head)

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
        self.write(render_refusal(reply))
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

    def _arm(self, kind: str, delay: float) -> None:
        self._timer_kind = kind
        self._deadline.set(self._loop.time() + delay)

    def _disarm(self) -> None:
        self._timer_kind = ""
        self._deadline.clear()

    def _cancel_timer(self) -> None:
        self._timer_kind = ""
        self._deadline.cancel()

    def _timed_out(self) -> None:
        kind, self._timer_kind = self._timer_kind, ""
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
