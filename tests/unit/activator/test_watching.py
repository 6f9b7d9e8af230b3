"""The EndpointSlice feed: which pod port http-port picks, and the ready set each route gets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.activator import endpoints, server, watching
from autoscaler.model import TargetKey
from autoscaler.policy.annotations import PREFIX

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


@dataclass(frozen=True)
class Deployment:
    annotations: Mapping[str, str]
    created: datetime | None = None


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
