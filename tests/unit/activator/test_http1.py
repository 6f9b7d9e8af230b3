"""The activator's HTTP/1.1 server on its own: pipelining, 100-continue, bodies in and out, keep-alive and
closing, shutdown, handler failures and flow control, through real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry

from autoscaler.activator import guard, http1, messages
from autoscaler.activator import metrics as activator_metrics
from autoscaler.observability.log_events import ActivatorLog
from tests.unit.activator import helpers

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class Served:
    server: http1.Server
    port: int
    registry: CollectorRegistry

    def connection(self) -> http1.Connection:
        """The server side of the one open client connection."""
        (only,) = self.server.connections
        return only


def holding(path: str) -> tuple[messages.Handler, asyncio.Event, asyncio.Event]:
    """A handler answering 200 with the path, which holds requests for ``path`` until released; and the events
    (one of them started, release)."""
    started, release = asyncio.Event(), asyncio.Event()

    async def handle(request: messages.Request) -> messages.Answer:
        if request.raw_path == path:
            started.set()
            await release.wait()
        return messages.Reply(200, request.raw_path.encode())

    return handle, started, release


@asynccontextmanager
async def serving(handler: messages.Handler, **limits: Any) -> AsyncIterator[Served]:
    """``handler`` behind an ``http1.Server`` with ``guard.ConnectionLimits(**limits)`` on 127.0.0.1."""
    registry = CollectorRegistry()
    server = http1.Server(
        handler,
        guard=guard.Guard(
            limits=guard.ConnectionLimits(**limits), metrics=activator_metrics.ActivatorMetrics(registry)
        ),
    )
    async with helpers.proxy_serving(server) as port:
        yield Served(server=server, port=port, registry=registry)


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[Streams]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def get(path: str = "/", *, method: str = "GET", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"%s %s HTTP/%s\r\nHost: here\r\n%s\r\n" % (method.encode(), path.encode(), version, extra)


def header_fields(head: bytes) -> dict[str, str]:
    """The header fields of an answer's head (names lowered; the last value of a repeated name)."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = [line.split(":", 1) for line in lines if line]
    return {name.strip().lower(): value.strip() for name, value in pairs}


async def read_head(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        return await reader.readuntil(b"\r\n\r\n")


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One answer framed by its Content-Length: (head, body)."""
    head = await read_head(reader)
    async with asyncio.timeout(5):
        body = await reader.readexactly(int(header_fields(head)["content-length"]))
    return head, body


def split_answers(data: bytes) -> list[tuple[bytes, bytes]]:
    """The answers, each framed by its Content-Length, that ``data`` holds: (head, body) each."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        head += b"\r\n\r\n"
        length = int(header_fields(head)["content-length"])
        answers.append((head, rest[:length]))
        data = rest[length:]
    return answers


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """What the server still sends until it closes the connection."""
    async with asyncio.timeout(5):
        return await reader.read(-1)


async def read_whole(body: messages.Body) -> bytes:
    parts = []
    while chunk := await body.read():
        parts.append(chunk)
    return b"".join(parts)


def responses(served: Served, status: int) -> float:
    found = served.registry.get_sample_value(
        "queue_autoscaler_activator_responses_total",
        {"namespace": "", "deployment": "", "code": str(status)},
    )
    return found or 0.0


async def echo_path(request: messages.Request) -> messages.Answer:
    return messages.Reply(200, request.raw_path.encode())


# -- pipelining ----------------------------------------------------------------------------------------------


async def test_pipelined_requests_are_handled_one_at_a_time_and_answered_in_order_once_each() -> None:
    paths = ["/one", "/two", "/three"]
    gates = {path: asyncio.Event() for path in paths}
    started: list[str] = []
    active = most_active = 0

    async def handle(request: messages.Request) -> messages.Answer:
        nonlocal active, most_active
        started.append(request.raw_path)
        active += 1
        most_active = max(most_active, active)
        try:
            if request.raw_path in gates:
                await gates[request.raw_path].wait()
        finally:
            active -= 1
        return messages.Reply(200, request.raw_path.encode())

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/one") + get("/two") + get("/three"))
        await helpers.eventually(lambda: started == ["/one"])
        # All three are parsed (two wait their turn) while only the first is being handled.
        await helpers.eventually(lambda: len(served.connection()._pending) == 2)
        heads, bodies = [], []
        for index, path in enumerate(paths):
            await helpers.eventually(lambda: len(started) == index + 1)  # noqa: B023
            assert started == paths[: index + 1]
            gates[path].set()
            head, body = await read_answer(reader)
            heads.append(head)
            bodies.append(body)
        writer.write(get("/last", extra=b"Connection: close\r\n"))
        rest = await read_to_end(reader)
    assert bodies == [b"/one", b"/two", b"/three"]
    assert not [head for head in heads if b"Connection: close" in head]
    # Nothing more was sent for the pipelined requests: only the answer to the last one follows.
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"\r\n\r\n/last")
    assert rest.count(b"HTTP/1.1") == 1
    assert started == [*paths, "/last"]
    assert most_active == 1


UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
ENDING = [
    ("asking to close", get("/last", extra=b"Connection: close\r\n"), b"HTTP/1.1 200 OK\r\n"),
    ("of HTTP/1.0", get("/last", version=b"1.0"), b"HTTP/1.1 200 OK\r\n"),
    ("asking to upgrade", get("/last", extra=UPGRADE), b"HTTP/1.1 200 OK\r\n"),
    ("malformed", b"HELLO WORLD\r\n\r\n", b"HTTP/1.1 400 Bad Request\r\n"),
]


@pytest.mark.parametrize(("what", "last", "answered"), ENDING, ids=[e[0] for e in ENDING])
async def test_a_pipelined_request_that_ends_the_connection_is_answered_after_the_ones_before_it(
    what: str, last: bytes, answered: bytes
) -> None:
    async with serving(echo_path, lingering_time=0.2) as served, connected(served.port) as (reader, writer):
        with structlog.testing.capture_logs():
            writer.write(get("/one") + get("/two") + last)
            answers = split_answers(await read_to_end(reader))
    assert [body for _, body in answers[:2]] == [b"/one", b"/two"]
    assert not [head for head, _ in answers[:2] if b"Connection: close" in head]
    assert len(answers) == 3
    head, _ = answers[2]
    assert head.startswith(answered)
    assert header_fields(head)["connection"] == "close"


async def test_a_body_that_arrived_whole_but_was_left_unread_does_not_stop_the_next_pipelined_request() -> (
    None
):
    async with serving(echo_path) as served, connected(served.port) as (reader, writer):
        writer.write(get("/posted", method="POST", extra=b"Content-Length: 5\r\n") + b"hello" + get("/after"))
        _, first = await read_answer(reader)
        head, second = await read_answer(reader)
    assert first == b"/posted"
    assert second == b"/after"
    assert "connection" not in header_fields(head)


@pytest.mark.parametrize("size", [5, 300 * 1024], ids=["small", "past the high-water mark"])
async def test_a_body_that_arrived_whole_but_was_left_unread_does_not_stop_the_next_request(
    size: int,
) -> None:
    async def handle(request: messages.Request) -> messages.Answer:
        if request.raw_path == "/posted":
            await helpers.eventually(request.content.is_eof)
        return messages.Reply(200, request.raw_path.encode())

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/posted", method="POST", extra=b"Content-Length: %d\r\n" % size) + b"x" * size)
        first_head, first = await read_answer(reader)
        writer.write(get("/after"))
        try:
            _, second = await read_answer(reader)
        except TimeoutError:
            pytest.fail("the request after the unread body was not answered within 5 s")
    assert first == b"/posted"
    assert "connection" not in header_fields(first_head)
    assert second == b"/after"


async def test_an_answer_given_before_the_body_arrived_says_it_closes_the_connection_and_does() -> None:
    async def handle(request: messages.Request) -> messages.Answer:
        return messages.Reply(404, b"nothing here")

    async with serving(handle, lingering_time=0.2) as served, connected(served.port) as (reader, writer):
        writer.write(get("/", method="POST", extra=b"Content-Length: 1000\r\n") + b"0123456789")
        head, body = await read_answer(reader)
        rest = await read_to_end(reader)
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert body == b"nothing here"
    assert rest == b""
    assert header_fields(head).get("connection") == "close"


# -- Expect: 100-continue ------------------------------------------------------------------------------------


async def test_100_continue_is_sent_only_when_the_handler_first_reads_the_body_then_the_answer() -> None:
    handling = asyncio.Event()
    go_on = asyncio.Event()

    async def handle(request: messages.Request) -> messages.Answer:
        handling.set()
        await go_on.wait()
        body = await read_whole(request.content)
        return messages.Reply(200, b"got " + body)

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/", method="POST", extra=b"Expect: 100-continue\r\nContent-Length: 5\r\n"))
        async with asyncio.timeout(5):
            await handling.wait()
        with pytest.raises(TimeoutError):  # the handler has not read yet: nothing is sent
            async with asyncio.timeout(0.2):
                await reader.read(1)
        go_on.set()
        interim = await read_head(reader)
        writer.write(b"hello")
        head, body = await read_answer(reader)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"got hello"


async def test_a_handler_that_answers_without_reading_the_body_sends_no_100_continue() -> None:
    async def handle(request: messages.Request) -> messages.Answer:
        return messages.Reply(417, b"not wanted")

    async with serving(handle, lingering_time=0.2) as served, connected(served.port) as (reader, writer):
        writer.write(get("/", method="POST", extra=b"Expect: 100-continue\r\nContent-Length: 5\r\n"))
        answer = await read_to_end(reader)
    assert answer.startswith(b"HTTP/1.1 417 Expectation Failed\r\n")
    assert b"100 Continue" not in answer
    assert answer.endswith(b"\r\n\r\nnot wanted")


# -- request bodies ------------------------------------------------------------------------------------------


async def test_a_chunked_body_reaches_the_handler_decoded_and_whole_and_an_empty_one_frames_no_body() -> None:
    seen: list[tuple[bool, bytes]] = []

    async def handle(request: messages.Request) -> messages.Answer:
        seen.append((request.body_exists, await read_whole(request.content)))
        return messages.Reply(200, b"ok")

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/", method="POST", extra=b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n")
        await writer.drain()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await read_answer(reader)
        writer.write(get("/", method="POST", extra=b"Content-Length: 0\r\n"))
        await read_answer(reader)
    assert seen == [(True, b"hello world"), (False, b"")]


# -- streamed answers ----------------------------------------------------------------------------------------


async def stream_hello_world(request: messages.Request) -> messages.Answer:
    if request.raw_path != "/stream":
        return messages.Reply(200, b"plain")
    await request.start(200, None, [("X-A", "1")], length=None)
    await request.write(b"hello ")
    await request.write(b"world")
    await request.finish()
    return messages.STREAMED


async def test_a_streamed_answer_reaches_an_http_1_1_client_chunked_and_the_connection_stays_usable() -> None:
    async with serving(stream_hello_world) as served, connected(served.port) as (reader, writer):
        writer.write(get("/stream"))
        head = await read_head(reader)
        async with asyncio.timeout(5):
            body = await reader.readuntil(b"0\r\n\r\n")
        writer.write(get("/next"))
        _, after = await read_answer(reader)
    fields = header_fields(head)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert fields["x-a"] == "1"
    assert fields["transfer-encoding"] == "chunked"
    assert "content-length" not in fields
    assert "connection" not in fields
    assert body == b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    assert after == b"plain"


async def test_a_streamed_answer_to_an_http_1_0_client_ends_its_body_by_closing_the_connection() -> None:
    async with serving(stream_hello_world) as served, connected(served.port) as (reader, writer):
        writer.write(get("/stream", version=b"1.0", extra=b"Connection: keep-alive\r\n"))
        answer = await read_to_end(reader)
    head, body = answer.split(b"\r\n\r\n", 1)
    fields = header_fields(head + b"\r\n")
    assert fields["x-a"] == "1"
    assert fields["connection"] == "close"
    assert "transfer-encoding" not in fields
    assert "content-length" not in fields
    assert body == b"hello world"


async def test_a_streamed_answer_to_head_sends_no_body_and_no_chunked_framing() -> None:
    async with serving(stream_hello_world) as served, connected(served.port) as (reader, writer):
        writer.write(get("/stream", method="HEAD"))
        head = await read_head(reader)
        writer.write(get("/next"))
        next_head, after = await read_answer(reader)
    assert "transfer-encoding" not in header_fields(head)
    assert next_head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert after == b"plain"


# -- HEAD ----------------------------------------------------------------------------------------------------


async def test_head_is_answered_with_the_bodys_content_length_but_no_body_and_the_connection_is_kept() -> (
    None
):
    async def handle(request: messages.Request) -> messages.Answer:
        return messages.Reply(200, b"twelve bytes", headers=[("Content-Length", "999")])

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/", method="HEAD"))
        head = await read_head(reader)
        writer.write(get("/", extra=b"Connection: close\r\n"))
        rest = await read_to_end(reader)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert header_fields(head)["content-length"] == "12"
    assert head.count(b"Content-Length") == 1
    # The very next bytes are the GET's answer: the HEAD answer had no body.
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"\r\n\r\ntwelve bytes")


# -- upgrades ------------------------------------------------------------------------------------------------


async def test_an_upgrade_request_is_answered_as_a_plain_request_and_the_connection_then_closes() -> None:
    seen: list[str] = []

    async def handle(request: messages.Request) -> messages.Answer:
        seen.append(request.raw_path)
        return messages.Reply(200, b"no upgrade")

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/chat", extra=UPGRADE) + b"\x81\x05hello" + get("/after"))
        head, body = await read_answer(reader)
        rest = await read_to_end(reader)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert header_fields(head)["connection"] == "close"
    assert body == b"no upgrade"
    assert rest == b""
    assert seen == ["/chat"]


# -- keep-alive ----------------------------------------------------------------------------------------------


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() -> None:
    async with (
        serving(echo_path, keepalive_timeout=0.2) as served,
        connected(served.port) as (reader, writer),
    ):
        writer.write(get("/one"))
        _, body = await read_answer(reader)
        idle_since = asyncio.get_running_loop().time()
        rest = await read_to_end(reader)
        idled = asyncio.get_running_loop().time() - idle_since
    assert body == b"/one"
    assert rest == b""
    assert 0.15 <= idled < 4.0


async def test_the_keepalive_timeout_does_not_close_a_connection_whose_answer_is_in_progress() -> None:
    handle, slow_started, release = holding("/slow")

    async with (
        serving(handle, keepalive_timeout=0.2) as served,
        connected(served.port) as (slow_reader, slow_writer),
        connected(served.port) as (quick_reader, quick_writer),
    ):
        slow_writer.write(get("/slow"))
        async with asyncio.timeout(5):
            await slow_started.wait()
        quick_writer.write(get("/quick"))
        await read_answer(quick_reader)
        # The other connection idled for its keep-alive timeout, which started after /slow was received.
        assert await read_to_end(quick_reader) == b""
        release.set()
        head, body = await read_answer(slow_reader)
        rest = await read_to_end(slow_reader)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"/slow"
    assert rest == b""


# -- clients that go away ------------------------------------------------------------------------------------


async def test_a_client_that_closes_its_connection_cancels_its_handler_and_is_sent_nothing() -> None:
    handling = asyncio.Event()
    cancelled = asyncio.Event()

    async def handle(request: messages.Request) -> messages.Answer:
        handling.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return messages.Reply(200, b"too late")

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/"))
        async with asyncio.timeout(5):
            await handling.wait()
        writer.write_eof()  # the client's end is closed; it can still see whether anything is sent
        answer = await read_to_end(reader)
        async with asyncio.timeout(5):
            await cancelled.wait()
        await helpers.eventually(lambda: not served.server.connections)
    assert answer == b""
    assert responses(served, 500) == 0.0


async def test_a_client_that_closes_while_a_streamed_answer_is_written_cancels_its_handler() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handle(request: messages.Request) -> messages.Answer:
        await request.start(200, None, [], length=None)
        started.set()
        try:
            while True:
                await request.write(b"x" * 1024)
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/"))
        async with asyncio.timeout(5):
            await started.wait()
        head = await read_head(reader)
        writer.close()
        async with asyncio.timeout(5):
            await cancelled.wait()
        await helpers.eventually(lambda: not served.server.connections)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert responses(served, 500) == 0.0


# -- shutdown ------------------------------------------------------------------------------------------------


async def test_shutdown_closes_idle_connections_at_once_and_lets_an_answer_in_progress_finish() -> None:
    handle, busy, release = holding("/busy")

    async with (
        serving(handle) as served,
        connected(served.port) as (idle_reader, idle_writer),
        connected(served.port) as (busy_reader, busy_writer),
    ):
        idle_writer.write(get("/idle"))
        await read_answer(idle_reader)
        busy_writer.write(get("/busy"))
        async with asyncio.timeout(5):
            await busy.wait()
        shutting_down = asyncio.create_task(served.server.shutdown(10.0))
        assert await read_to_end(idle_reader) == b""
        assert not shutting_down.done()
        assert len(served.server.connections) == 1
        release.set()
        head, body = await read_answer(busy_reader)
        rest = await read_to_end(busy_reader)
        async with asyncio.timeout(5):  # well before the shutdown's timeout of 10 s
            await shutting_down
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert header_fields(head)["connection"] == "close"
    assert body == b"/busy"
    assert rest == b""
    assert not served.server.connections


# -- handler failures ----------------------------------------------------------------------------------------


async def test_a_handler_that_raises_gets_a_500_answer_counted_and_the_connection_closes() -> None:
    calls: list[str] = []

    async def handle(request: messages.Request) -> messages.Answer:
        calls.append(request.raw_path)
        raise RuntimeError("a defect")

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        with structlog.testing.capture_logs() as logs:
            writer.write(get("/broken") + get("/pipelined"))
            head, body = await read_answer(reader)
            rest = await read_to_end(reader)
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert header_fields(head)["connection"] == "close"
    assert body == b"internal error in the activator\n"
    assert rest == b""
    assert calls == ["/broken"]
    assert responses(served, 500) == 1.0
    assert [entry["log_level"] for entry in logs if entry["event"] == ActivatorLog.REQUEST_FAILED] == [
        "error"
    ]


async def test_a_handler_that_raises_after_starting_a_streamed_answer_cuts_it_short() -> None:
    async def handle(request: messages.Request) -> messages.Answer:
        await request.start(200, None, [], length=None)
        await request.write(b"partial")
        raise RuntimeError("a defect")

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        with structlog.testing.capture_logs():
            writer.write(get("/"))
            answer = await read_to_end(reader)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"7\r\npartial\r\n"  # no last chunk: the client can tell the answer is not whole
    assert responses(served, 500) == 1.0


# -- flow control --------------------------------------------------------------------------------------------


async def test_a_large_body_the_handler_does_not_read_pauses_reading_and_reading_it_resumes() -> None:
    size = 8 * 1024 * 1024
    bound = 2 * 256 * 1024  # the high-water mark, and at most one read of the socket past it
    received: list[messages.Request] = []
    go_on = asyncio.Event()
    buffered: list[int] = []

    async def handle(request: messages.Request) -> messages.Answer:
        received.append(request)
        await go_on.wait()
        total = 0
        while True:
            buffered.append(request.content._size)
            chunk = await request.content.read()
            if not chunk:
                break
            total += len(chunk)
        return messages.Reply(200, str(total).encode())

    async with serving(handle) as served, connected(served.port) as (reader, writer):
        writer.write(get("/", method="POST", extra=b"Content-Length: %d\r\n" % size))
        writer.write(b"x" * size)
        sending = asyncio.create_task(writer.drain())
        await helpers.eventually(lambda: bool(received))
        transport = served.connection()._transport
        assert transport is not None
        await helpers.eventually(lambda: not transport.is_reading())
        (request,) = received
        held = request.content._size
        assert 256 * 1024 < held <= bound
        assert not request.content.is_eof()
        go_on.set()
        _, body = await read_answer(reader)
        await asyncio.wait_for(sending, 5)
    assert body == str(size).encode()
    assert max(buffered) <= bound
