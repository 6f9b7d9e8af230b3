"""Kept-alive connections to the endpoints: a bounded pool per endpoint address, reused across requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from autoscaler import cli, errors, settings
from autoscaler.activator import endpoints, pool, proxy
from tests.unit.activator import helpers
from tests.unit.activator.conftest import ORDERS, make_stack


@dataclass
class CountingPod:
    """A pod that counts the connections it accepts and the requests it holds at once; each request is
    held until ``hold_until`` of them are in flight together (then all pass, and later ones pass at once)."""

    hold_until: int
    accepted: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    answered: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.hold_until:
            self.full.set()
        try:
            await self.full.wait()
        finally:
            self.in_flight -= 1
        self.answered += 1
        return web.Response(text="ok")


class _CountingServer(web.Server):
    def __init__(self, pod: CountingPod) -> None:
        super().__init__(pod.handle)
        self._pod = pod

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        self._pod.accepted += 1
        super().connection_made(handler, transport)


@asynccontextmanager
async def counting_pod(pod: CountingPod) -> AsyncIterator[endpoints.Address]:
    async with helpers.serving(_CountingServer(pod)) as port:
        yield endpoints.Address("127.0.0.1", port)


async def test_a_burst_to_one_endpoint_never_opens_more_connections_than_the_bound_and_reuses_them() -> None:
    pod = CountingPod(hold_until=4)
    limits = proxy.Limits(max_connections_per_endpoint=4)
    async with make_stack(limits=limits) as stack, counting_pod(pod) as address:
        stack.route()
        stack.activator.endpoints.update(ORDERS, [address])
        first = await asyncio.gather(*(stack.send() for _ in range(40)))
        second = await asyncio.gather(*(stack.send() for _ in range(40)))
    assert [a.status for a in first + second] == [200] * 80
    assert pod.answered == 80
    assert pod.most_in_flight == 4
    assert pod.accepted == 4


async def test_each_endpoint_has_its_own_bound() -> None:
    pods = [CountingPod(hold_until=3), CountingPod(hold_until=3)]
    limits = proxy.Limits(max_connections_per_endpoint=3)
    async with make_stack(limits=limits) as stack, counting_pod(pods[0]) as one, counting_pod(pods[1]) as two:
        stack.route()
        stack.activator.endpoints.update(ORDERS, [one, two])
        answers = await asyncio.gather(*(stack.send() for _ in range(60)))
    assert [a.status for a in answers] == [200] * 60
    assert sum(pod.answered for pod in pods) == 60
    assert [pod.accepted for pod in pods] == [3, 3]


def test_the_per_endpoint_bound_defaults_to_100_and_refuses_what_is_not_a_positive_integer() -> None:
    parse = cli.build_parser().parse_args
    assert settings.activator_settings(parse(["activator"])).max_connections_per_endpoint == 100
    assert proxy.Limits().max_connections_per_endpoint == 100
    found = settings.activator_settings(parse(["activator", "--max-connections-per-endpoint", "8"]))
    assert found.max_connections_per_endpoint == 8
    for bad in ("0", "-1", "many"):
        with pytest.raises(
            errors.SettingsError, match=rf"--max-connections-per-endpoint='{bad}': an integer > 0"
        ):
            settings.activator_settings(parse(["activator", "--max-connections-per-endpoint", bad]))


@asynccontextmanager
async def raw_pod(answer: bytes, *, close_after: bool) -> AsyncIterator[tuple[endpoints.Address, list[int]]]:
    """A pod answering every request it reads with the bytes ``answer``; with ``close_after`` it closes
    the connection right after each answer (without saying so). Yields its address and, per accepted
    connection, how many requests it answered on it."""
    answered: list[int] = []
    serving: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        serving.add(task)
        answered.append(0)
        index = len(answered) - 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
                await writer.drain()
                answered[index] += 1
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield endpoints.Address("127.0.0.1", listening.sockets[0].getsockname()[1]), answered
    finally:
        listening.close()
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        await listening.wait_closed()


OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_a_pod_that_closes_each_connection_after_one_answer_still_answers_every_request() -> None:
    async with make_stack() as stack, raw_pod(OK_ANSWER, close_after=True) as (address, answered):
        stack.route()
        stack.activator.endpoints.update(ORDERS, [address])
        answers = [await stack.send() for _ in range(20)]
    assert [(a.status, a.body) for a in answers] == [(200, b"ok")] * 20
    assert answered == [1] * len(answered)
    assert sum(answered) == 20


async def test_a_kept_alive_connection_carries_request_after_request() -> None:
    async with make_stack() as stack, raw_pod(OK_ANSWER, close_after=False) as (address, answered):
        stack.route()
        stack.activator.endpoints.update(ORDERS, [address])
        answers = [await stack.send() for _ in range(20)]
    assert [(a.status, a.body) for a in answers] == [(200, b"ok")] * 20
    assert answered == [20]


async def test_informational_answers_before_the_final_one_are_not_relayed_as_the_answer() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + OK_ANSWER
    async with make_stack() as stack, raw_pod(early, close_after=False) as (address, _):
        stack.route()
        stack.activator.endpoints.update(ORDERS, [address])
        answer = await stack.send()
    assert (answer.status, answer.body) == (200, b"ok")


async def test_idle_connections_are_closed_after_the_keepalive_time() -> None:
    pods = pool.Pool(limit=4, connect_timeout=1.0, wait_timeout=1.0, keepalive=0.05)
    async with raw_pod(OK_ANSWER, close_after=False) as (address, answered):
        head = b"GET / HTTP/1.1\r\nHost: orders.shop\r\n\r\n"
        answer = await pool.exchange(
            pods, address=address, method="GET", head=head, body=b"", read_timeout=1.0
        )
        assert await answer.content.read() == b"ok"
        answer.release()
        assert pods.open_connections(address) == 1
        await helpers.eventually(lambda: pods.open_connections(address) == 0)
        pods.close()
    assert answered == [1]


async def test_waiting_for_a_busy_endpoints_connection_is_bounded_by_the_wait_timeout() -> None:
    pods = pool.Pool(limit=1, connect_timeout=1.0, wait_timeout=0.05)
    async with raw_pod(OK_ANSWER, close_after=False) as (address, _):
        held = await pods.acquire(address)
        with pytest.raises(pool.UpstreamTimeout, match=r"all 1 connections stayed busy for 0.05s"):
            await pods.acquire(address)
        pods.release(held, keep=True)
        again = await pods.acquire(address)
        assert again is held
        pods.release(again, keep=False)
        assert pods.open_connections(address) == 0
        pods.close()
