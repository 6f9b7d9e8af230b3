"""Fixtures: an activator serving on 127.0.0.1 with a client, and a recording poker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry

from autoscaler.activator import routing, server
from autoscaler.model import TargetKey
from autoscaler.policy.annotations import PREFIX
from tests.unit.activator import helpers

ORDERS = TargetKey("shop", "orders")


@dataclass
class Pokes:
    targets: list[TargetKey] = field(default_factory=list)

    def poke(self, target: TargetKey) -> None:
        self.targets.append(target)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class Stack:
    activator: server.Activator
    registry: CollectorRegistry
    pokes: Pokes
    port: int
    client: aiohttp.ClientSession

    def route(self, target: TargetKey = ORDERS, **annotations: str) -> routing.Route:
        """Routes ``target`` with service 'svc', port 8080 and the given annotations (dashes as '_')."""
        merged = {PREFIX + "http-service": "svc", PREFIX + "http-port": "8080"}
        merged.update({PREFIX + key.replace("_", "-"): value for key, value in annotations.items()})
        route = self.activator.apply_deployment(
            namespace=target.namespace, name=target.name, annotations=merged
        )
        assert route is not None
        return route

    def sample(self, name: str, target: TargetKey = ORDERS, **labels: str) -> float | None:
        return self.registry.get_sample_value(
            name, {"namespace": target.namespace, "deployment": target.name, **labels}
        )

    async def send(
        self,
        host: str = "orders.shop",
        path: str = "/",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        async with self.client.request(
            method,
            f"http://127.0.0.1:{self.port}{path}",
            headers={"Host": host, **(headers or {})},
            data=data,
        ) as response:
            return Answer(response.status, response.headers, await response.read())


@asynccontextmanager
async def make_stack(**options: Any) -> AsyncIterator[Stack]:
    """An activator (with ``options``) served on 127.0.0.1, and a client for it."""
    registry = CollectorRegistry()
    pokes = Pokes()
    options.setdefault("retry_backoff", 0.01)
    activator = server.Activator(registry=registry, poker=pokes, **options)
    try:
        async with (
            helpers.proxy_serving(server.build_server(activator)) as port,
            aiohttp.ClientSession(auto_decompress=False) as client,
        ):
            yield Stack(activator=activator, registry=registry, pokes=pokes, port=port, client=client)
    finally:
        await activator.close()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with make_stack() as made:
        yield made
