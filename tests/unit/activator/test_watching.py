"""The EndpointSlice feed: which pod port http-port picks, and the ready set each route gets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pytest
import structlog
from prometheus_client import CollectorRegistry

from autoscaler.activator import endpoints, probing, server, watching
from autoscaler.model import TargetKey
from autoscaler.observability.log_events import ActivatorLog
from autoscaler.policy.annotations import PREFIX
from tests.unit.activator import helpers
from tests.unit.activator.conftest import make_stack

ORDERS = TargetKey("shop", "orders")


@pytest.mark.parametrize(
    ("wanted", "ports", "expected"),
    [
        ("http", {"http": 8080, "admin": 9000}, 8080),
        ("grpc", {"http": 8080}, None),
        ("http", {}, None),
        (8080, {"http": 8080, "admin": 9000}, 8080),
        (8080, {}, 8080),
        (80, {"http": 8080}, 8080),
        (80, {"http": 8080, "admin": 9000}, None),
        (None, {"http": 8080}, 8080),
        (None, {"": 8080}, 8080),
        (None, {"http": 8080, "admin": 9000}, None),
        (None, {}, None),
    ],
)
def test_http_port_picks_the_pod_port_as_documented(
    wanted: int | str | None, ports: dict[str, int], expected: int | None
) -> None:
    assert watching.endpoint_port(wanted, ports) == expected


@dataclass(frozen=True)
class Service:
    addresses: frozenset[str]
    ports: Mapping[str, int]
    not_ready: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Deployment:
    annotations: Mapping[str, str]
    created: datetime | None = None
    readiness_probe: Mapping[str, object] | None = None
    container_ports: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Services:
    known: dict[tuple[str, str], Service] = field(default_factory=dict)

    def __call__(self, namespace: str, name: str) -> Service | None:
        return self.known.get((namespace, name))


def test_a_route_gets_its_services_ready_addresses_on_the_resolved_port_and_follows_slice_changes() -> None:
    activator = server.Activator(registry=CollectorRegistry())
    services = Services()
    router = watching.EndpointRouter(activator, services)
    router.deployment_changed(ORDERS, Deployment({PREFIX + "http-service": "orders"}))
    assert activator.endpoints.ready(ORDERS) == set()
    services.known["shop", "orders"] = Service(frozenset(), {})
    router.service_changed("shop", "orders")
    assert activator.endpoints.ready(ORDERS) == set()
    services.known["shop", "orders"] = Service(frozenset({"10.0.0.2"}), {"http": 8081})
    router.service_changed("shop", "orders")
    assert activator.endpoints.ready(ORDERS) == {endpoints.Address("10.0.0.2", 8081)}
    router.service_changed("shop", "payments")
    assert activator.endpoints.ready(ORDERS) == {endpoints.Address("10.0.0.2", 8081)}
    router.deployment_changed(ORDERS, None)
    assert ORDERS not in activator.routes
    assert activator.endpoints.ready(ORDERS) == set()


def test_invalid_annotations_leave_the_route_and_its_endpoints_as_they_were() -> None:
    activator = server.Activator(registry=CollectorRegistry())
    services = Services({("shop", "orders"): Service(frozenset({"10.0.0.2"}), {"http": 8080})})
    router = watching.EndpointRouter(activator, services)
    router.deployment_changed(ORDERS, Deployment({PREFIX + "http-service": "orders"}))
    router.deployment_changed(
        ORDERS, Deployment({PREFIX + "http-service": "orders", PREFIX + "max-pending": "0"})
    )
    assert ORDERS in activator.routes
    assert activator.endpoints.ready(ORDERS) == {endpoints.Address("10.0.0.2", 8080)}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"httpGet": {"path": "/healthz", "port": 8080}}, probing.Probe("http", 8080, path="/healthz")),
        (
            {"httpGet": {"port": "http", "scheme": "HTTPS"}, "timeoutSeconds": 3},
            probing.Probe("http", 8443, scheme="https", timeout=3.0),
        ),
        ({"tcpSocket": {"port": "9000"}}, probing.Probe("tcp", 9000)),
        ({"httpGet": {"port": "nope"}}, None),
        ({"exec": {"command": ["true"]}}, None),
        ({"grpc": {"port": 9000}}, None),
        (None, None),
    ],
)
def test_the_pods_readiness_probe_is_run_as_the_kubelet_runs_it_or_not_at_all(
    raw: Mapping[str, object] | None, expected: probing.Probe | None
) -> None:
    assert probing.probe_from(raw, {"http": 8443}) == expected


async def test_a_starting_pod_whose_probe_passes_gets_the_queued_request_before_its_slice_says_ready() -> (
    None
):
    async with helpers.pods(1) as (pod,), make_stack() as stack:
        services = Services(
            {("shop", "orders"): Service(frozenset(), {"http": pod.address.port}, frozenset({"127.0.0.1"}))}
        )
        router = watching.EndpointRouter(stack.activator, services, probe_interval=0.01)
        probe = {"httpGet": {"path": "/healthz", "port": pod.address.port}}
        router.deployment_changed(
            ORDERS, Deployment({PREFIX + "http-service": "orders"}, readiness_probe=probe)
        )
        answer = await stack.send(path="/work")
    assert answer.status == 200
    assert [seen.raw_path for seen in pod.seen] == ["/healthz", "/work"]
    assert stack.activator.endpoints.ready(ORDERS) == {pod.address}


async def test_a_passing_probe_is_acted_on_when_it_answers_not_at_the_next_probe_round() -> None:
    async with helpers.pods(1) as (pod,), make_stack() as stack:
        services = Services(
            {("shop", "orders"): Service(frozenset(), {"http": pod.address.port}, frozenset({"127.0.0.1"}))}
        )
        # One round an hour: the answer can only come from the probe's own completion.
        router = watching.EndpointRouter(stack.activator, services, probe_interval=3600)
        probe = {"httpGet": {"path": "/healthz", "port": pod.address.port}}
        notes = {PREFIX + "http-service": "orders", PREFIX + "activation-timeout": "5s"}
        router.deployment_changed(ORDERS, Deployment(notes, readiness_probe=probe))
        answer = await stack.send(path="/work")
    assert answer.status == 200
    assert [seen.raw_path for seen in pod.seen] == ["/healthz", "/work"]


async def test_no_probe_is_sent_without_a_queued_request_nor_for_exec_probes_nor_to_unlisted_addresses() -> (
    None
):
    async with helpers.pods(1) as (pod,), make_stack() as stack:
        services = Services(
            {("shop", "orders"): Service(frozenset(), {"http": pod.address.port}, frozenset({"127.0.0.1"}))}
        )
        router = watching.EndpointRouter(stack.activator, services, probe_interval=0.01)
        exec_probe = {"exec": {"command": ["true"]}}
        router.deployment_changed(
            ORDERS, Deployment({PREFIX + "http-service": "orders"}, readiness_probe=exec_probe)
        )
        stack.route(activation_timeout="200ms")
        router.deployment_changed(
            ORDERS,
            Deployment(
                {PREFIX + "http-service": "orders", PREFIX + "activation-timeout": "200ms"},
                readiness_probe=exec_probe,
            ),
        )
        assert (await stack.send()).status == 504
        services.known["shop", "orders"] = Service(frozenset(), {"http": pod.address.port}, frozenset())
        http_probe = {"httpGet": {"path": "/healthz", "port": pod.address.port}}
        router.deployment_changed(
            ORDERS,
            Deployment(
                {PREFIX + "http-service": "orders", PREFIX + "activation-timeout": "200ms"},
                readiness_probe=http_probe,
            ),
        )
        assert (await stack.send()).status == 504
        assert stack.activator.prober is not None
        assert stack.activator.prober.probes_sent == 0
    assert pod.seen == []


async def test_a_probed_address_leaves_when_its_slice_stops_listing_it() -> None:
    async with helpers.pods(1) as (pod,), make_stack() as stack:
        services = Services(
            {("shop", "orders"): Service(frozenset(), {"http": pod.address.port}, frozenset({"127.0.0.1"}))}
        )
        router = watching.EndpointRouter(stack.activator, services, probe_interval=0.01)
        probe = {"tcpSocket": {"port": pod.address.port}}
        router.deployment_changed(
            ORDERS, Deployment({PREFIX + "http-service": "orders"}, readiness_probe=probe)
        )
        assert (await stack.send()).status == 200
        services.known["shop", "orders"] = Service(frozenset(), {"http": pod.address.port}, frozenset())
        router.service_changed("shop", "orders")
    assert stack.activator.endpoints.ready(ORDERS) == set()


async def test_a_probed_pod_that_stops_listening_leaves_the_endpoints_and_is_probed_again() -> None:
    port = helpers.closed_port()
    connections: set[asyncio.StreamWriter] = set()
    handlers: set[asyncio.Task[None]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        connections.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    async def stop(pod: asyncio.Server) -> None:
        """The pod dies: it stops listening and its open connections close."""
        pod.close()
        for writer in connections:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await pod.wait_closed()

    async with make_stack() as stack:
        services = Services(
            {("shop", "orders"): Service(frozenset(), {"http": port}, frozenset({"127.0.0.1"}))}
        )
        router = watching.EndpointRouter(stack.activator, services, probe_interval=0.01)
        probe = {"tcpSocket": {"port": port}}
        annotations = {PREFIX + "http-service": "orders", PREFIX + "activation-timeout": "5s"}
        router.deployment_changed(ORDERS, Deployment(annotations, readiness_probe=probe))
        first_pod = await asyncio.start_server(answer, "127.0.0.1", port)
        first = await stack.send()
        await stop(first_pod)
        with structlog.testing.capture_logs() as logs:
            refused = await stack.send()
        left = stack.activator.endpoints.ready(ORDERS)
        waiting = asyncio.create_task(stack.send())
        await helpers.eventually(lambda: stack.activator.buffer.queued(ORDERS) == 1)
        second_pod = await asyncio.start_server(answer, "127.0.0.1", port)
        try:
            second = await waiting
        finally:
            await stop(second_pod)
    assert (first.status, refused.status, second.status) == (200, 502, 200)
    assert left == set()
    assert [entry["ip"] for entry in logs if entry["event"] == ActivatorLog.PROBE_REVOKED] == ["127.0.0.1"]


async def test_a_probe_that_hangs_on_one_starting_pod_does_not_delay_another_pods_probe() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()

    async with helpers.pods(1) as (pod,), make_stack() as stack:
        hanging = await asyncio.start_server(never_answer, "127.0.0.2", pod.address.port)
        try:
            listed = frozenset({"127.0.0.1", "127.0.0.2"})
            services = Services(
                {("shop", "orders"): Service(frozenset(), {"http": pod.address.port}, listed)}
            )
            router = watching.EndpointRouter(stack.activator, services, probe_interval=0.01)
            probe = {"httpGet": {"path": "/healthz", "port": pod.address.port}, "timeoutSeconds": 30}
            notes = {PREFIX + "http-service": "orders", PREFIX + "activation-timeout": "5s"}
            router.deployment_changed(ORDERS, Deployment(notes, readiness_probe=probe))
            answer = await stack.send(path="/work")
        finally:
            hanging.close()
            await hanging.wait_closed()
    assert answer.status == 200
    assert stack.activator.endpoints.ready(ORDERS) == {pod.address}
