"""Slow, greedy and malformed clients: 408 for stalls, a bound per client address, quiet 400/431, every
answer counted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
import structlog.testing

from autoscaler.activator import guard, proxy
from autoscaler.activator.endpoints import Address
from autoscaler.model import TargetConcurrency
from autoscaler.observability.log_events import ActivatorLog
from tests.unit.activator import helpers
from tests.unit.activator.conftest import ORDERS, Stack, make_stack

IDLE = TargetConcurrency(in_flight=0, queued=0)


def responses(stack: Stack, status: int, *, routed: bool = False) -> float:
    labels = {"namespace": "shop", "deployment": "orders"} if routed else {"namespace": "", "deployment": ""}
    found = stack.registry.get_sample_value(
        "queue_autoscaler_activator_responses_total", {**labels, "code": str(status)}
    )
    return found or 0.0


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Reads until the server closes the connection."""
    async with asyncio.timeout(5):
        return await reader.read(-1)


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """Reads one answer (head and Content-Length body); the server may linger before it closes."""
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await reader.readexactly(length)


@pytest.fixture
async def strict() -> AsyncIterator[Stack]:
    """An activator whose clients get 0.2 s for headers and for each pause in a body, 2 connections each."""
    async with make_stack(
        limits=proxy.Limits(body_idle_timeout=0.2),
        connection_limits=guard.ConnectionLimits(header_timeout=0.2, max_connections_per_client=2),
    ) as made:
        yield made


async def test_headers_that_never_end_are_answered_408_and_never_reach_a_target(strict: Stack) -> None:
    strict.route()
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: orders.shop\r\nX-Slow: ")
    with structlog.testing.capture_logs() as logs:
        answer = await read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"headers not received within 0.2s" in answer
    assert strict.activator.concurrency() == {ORDERS: IDLE}
    assert responses(strict, 408) == 1.0
    assert [entry["stage"] for entry in logs if entry["event"] == ActivatorLog.REQUEST_STALLED] == ["headers"]


async def test_headers_trickled_a_byte_at_a_time_do_not_restart_the_header_timeout(strict: Stack) -> None:
    strict.route()
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)

    async def trickle() -> None:
        for byte in b"GET / HTTP/1.1\r\nHost: orders.shop\r\nX-Slow: " + b"x" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.01)

    trickling = asyncio.create_task(trickle())
    answer = await read_answer(reader)
    trickling.cancel()
    await asyncio.gather(trickling, return_exceptions=True)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_a_kept_alive_connection_may_idle_between_requests_and_its_next_request_is_timed_again(
    strict: Stack,
) -> None:
    strict.route()
    async with helpers.pods(1) as (pod,):
        strict.activator.endpoints.update(ORDERS, [pod.address])
        reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
        writer.write(b"GET /one HTTP/1.1\r\nHost: orders.shop\r\n\r\n")
        async with asyncio.timeout(5):
            first = await reader.readuntil(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(
            0.4
        )  # idle between requests: longer than the header timeout, which is not running
        writer.write(b"GET /two HTTP/1.1\r\nHost: orders.shop\r\n")
        answer = await read_all(reader)
        writer.close()
    assert b"HTTP/1.1 408 " in answer
    assert [seen.raw_path for seen in pod.seen] == ["/one"]


async def test_a_body_that_stops_arriving_is_answered_408_and_stops_counting_as_in_flight(
    strict: Stack,
) -> None:
    strict.route()
    async with helpers.pods(1) as (pod,):
        strict.activator.endpoints.update(ORDERS, [pod.address])
        reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: orders.shop\r\nContent-Length: 100\r\n\r\n0123456789")
        await helpers.eventually(lambda: strict.activator.concurrency()[ORDERS].in_flight == 1)
        answer = await read_answer(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request body paused for more than 0.2s" in answer
    assert strict.activator.concurrency() == {ORDERS: IDLE}
    assert responses(strict, 408, routed=True) == 1.0


async def test_a_structured_cloudevent_whose_body_stalls_is_answered_408(strict: Stack) -> None:
    strict.route(cloudevents="true")
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    writer.write(
        b"POST / HTTP/1.1\r\nHost: orders.shop\r\nContent-Type: application/cloudevents+json\r\n"
        b'Content-Length: 100\r\n\r\n{"specversion"'
    )
    answer = await read_answer(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert strict.activator.concurrency() == {ORDERS: IDLE}


async def test_a_chunked_body_that_breaks_while_it_streams_is_answered_400_counted_once_and_logged_quietly(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.route()
    caplog.set_level(logging.DEBUG)
    async with helpers.pods(1) as (pod,):
        stack.activator.endpoints.update(ORDERS, [pod.address])
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: orders.shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await helpers.eventually(lambda: stack.activator.concurrency()[ORDERS].in_flight == 1)
        with structlog.testing.capture_logs() as logs:
            writer.write(b"not a chunk size\r\n")
            answer = await read_answer(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"malformed request body" in answer
    assert responses(stack, 400, routed=True) == 1.0
    assert responses(stack, 400) == 0.0
    (logged,) = [entry for entry in logs if entry["event"] == ActivatorLog.REQUEST_MALFORMED]
    assert logged["log_level"] == "info"
    assert not [entry for entry in logs if entry["log_level"] in ("warning", "error", "critical")]
    # (the pod's own server logs its cut request; nothing of the activator's goes above info)
    activator_records = [record for record in caplog.records if record.name.startswith("autoscaler")]
    assert not [record for record in activator_records if record.levelno >= logging.WARNING]
    await helpers.eventually(lambda: stack.activator.concurrency() == {ORDERS: IDLE})


async def test_connections_past_the_bound_per_client_are_refused_until_one_closes() -> None:
    async with make_stack(connection_limits=guard.ConnectionLimits(max_connections_per_client=2)) as stack:
        held = [await asyncio.open_connection("127.0.0.1", stack.port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        answer = await read_all(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"more than 2 open connections from 127.0.0.1" in answer
        assert responses(stack, 503) == 1.0
        _, first = held.pop(0)
        first.close()
        await first.wait_closed()

        async def status_of_a_new_connection() -> int:
            status, _ = await helpers.raw_exchange(
                stack.port, b"GET / HTTP/1.1\r\nHost: nobody.nowhere\r\nConnection: close\r\n\r\n"
            )
            return status

        statuses = [await status_of_a_new_connection()]
        while statuses[-1] == 503 and len(statuses) < 100:  # until the server has seen the close
            statuses.append(await status_of_a_new_connection())
        assert statuses[-1] == 404
        for _, other in held:
            other.close()


MALFORMED = [
    ("a duplicate Host", b"GET / HTTP/1.1\r\nHost: orders.shop\r\nHost: payments.shop\r\n\r\n", 400),
    (
        "a 100 KB header",
        b"GET / HTTP/1.1\r\nHost: orders.shop\r\nX-Big: " + b"x" * 100_000 + b"\r\n\r\n",
        431,
    ),
    (
        "1,000 headers",
        b"GET / HTTP/1.1\r\nHost: orders.shop\r\n"
        + b"".join(b"X-%d: y\r\n" % i for i in range(1000))
        + b"\r\n",
        431,
    ),
    ("a garbage request line", b"HELLO WORLD\r\n\r\n", 400),
    ("TLS on the plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n", 400),
]


@pytest.mark.parametrize(("what", "request_bytes", "status"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_a_malformed_request_is_answered_counted_and_logged_at_info_without_a_traceback(
    stack: Stack, caplog: pytest.LogCaptureFixture, what: str, request_bytes: bytes, status: int
) -> None:
    stack.route()
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        answered, answer = await helpers.raw_exchange(stack.port, request_bytes)
    assert answered == status, answer
    assert responses(stack, status) == 1.0
    (logged,) = [entry for entry in logs if entry["event"] == ActivatorLog.REQUEST_MALFORMED]
    assert logged["log_level"] == "info"
    assert logged["status"] == status
    assert "exc_info" not in logged
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING or record.exc_info]
    assert stack.activator.concurrency() == {ORDERS: IDLE}


async def test_deeply_nested_json_in_a_structured_event_is_a_400_with_a_reason_and_counted(
    stack: Stack,
) -> None:
    stack.route(cloudevents="true")
    body = (
        b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}"
    )
    answer = await stack.send(
        method="POST", headers={"Content-Type": "application/cloudevents+json"}, data=body
    )
    assert answer.status == 400
    assert b"nested too deeply" in answer.body
    assert responses(stack, 400, routed=True) == 1.0


async def test_a_structured_event_naming_its_type_twice_is_refused_before_the_type_filter(
    stack: Stack,
) -> None:
    stack.route(cloudevents="true", cloudevents_types="com.example.ok")
    body = b'{"specversion":"1.0","id":"1","source":"/s","type":"com.evil","type":"com.example.ok"}'
    answer = await stack.send(
        method="POST", headers={"Content-Type": "application/cloudevents+json"}, data=body
    )
    assert answer.status == 400
    assert b"attributes given more than once: 'type'" in answer.body


async def test_duplicate_keys_inside_data_are_the_events_own_business() -> None:
    async with make_stack() as stack, helpers.pods(1) as (pod,):
        stack.route(cloudevents="true")
        stack.activator.endpoints.update(ORDERS, [pod.address])
        body = (
            json.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})[:-1]
            + ',"data":{"a":1,"a":2}}'
        )
        answer = await stack.send(
            method="POST", headers={"Content-Type": "application/cloudevents+json"}, data=body.encode()
        )
    assert answer.status == 200
    assert pod.seen[0].body == body.encode()


async def test_an_internal_error_is_answered_500_and_counted() -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a defect")

    async with make_stack() as stack:
        # A defect in the hook a refused connection calls (the activator's own classes may be compiled,
        # setup.py, and those take no patches): the endpoint below refuses.
        stack.activator.on_refused = broken
        stack.route()
        stack.activator.endpoints.update(ORDERS, [Address("127.0.0.1", helpers.closed_port())])
        with structlog.testing.capture_logs() as logs:
            answer = await stack.send()
    assert answer.status == 500
    assert responses(stack, 500) == 1.0
    assert [entry["log_level"] for entry in logs if entry["event"] == ActivatorLog.REQUEST_FAILED] == [
        "error"
    ]
