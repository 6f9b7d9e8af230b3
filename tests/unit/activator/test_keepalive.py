"""Kept-alive connections to the endpoints: a bounded pool per endpoint address, reused across requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from autoscaler import cli, errors, settings
from autoscaler.activator import endpoints, proxy
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
