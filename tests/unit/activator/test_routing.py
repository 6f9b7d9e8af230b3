"""Route annotations and Host lookup."""

from __future__ import annotations

import pytest

from autoscaler import errors
from autoscaler.activator import routing
from autoscaler.model import TargetKey

P = routing.PREFIX


def route(annotations: dict[str, str], *, name: str = "orders", namespace: str = "shop") -> routing.Route:
    parsed = routing.parse_route(namespace=namespace, name=name, annotations=annotations)
    assert parsed is not None
    return parsed


def problems(annotations: dict[str, str]) -> dict[str, errors.AnnotationProblem]:
    with pytest.raises(errors.PolicyError) as caught:
        routing.parse_route(namespace="shop", name="orders", annotations=annotations)
    return {problem.key.removeprefix(P): problem for problem in caught.value.problems}


def test_a_deployment_without_http_service_has_no_route() -> None:
    assert routing.parse_route(namespace="shop", name="orders", annotations={P + "kafka-group": "g"}) is None


def test_defaults_apply_when_only_service_and_port_are_given() -> None:
    parsed = route({P + "http-service": "orders", P + "http-port": "8080"})
    assert parsed.target == TargetKey("shop", "orders")
    assert parsed.service == "orders"
    assert parsed.port == 8080
    assert parsed.hosts == {"orders.shop", "orders.shop.svc", "orders.shop.svc.cluster.local"}
    assert parsed.max_pending == 1000
    assert parsed.activation_timeout == 60.0
    assert parsed.concurrency_per_replica == 10
    assert parsed.cloudevents == routing.CloudEventsFilter(enabled=False, types=None)


def test_every_http_annotation_is_parsed() -> None:
    parsed = route(
        {
            P + "http-service": "orders-svc",
            P + "http-port": "http",
            P + "http-host": "Orders.Example.com, api.example.com.",
            P + "concurrency-per-replica": "25",
            P + "max-pending": "0",
            P + "activation-timeout": "1500ms",
            P + "cloudevents": "true",
            P + "cloudevents-types": "order.created, order.paid",
        }
    )
    assert parsed.port == "http"
    assert {"orders.example.com", "api.example.com"} <= parsed.hosts
    assert parsed.concurrency_per_replica == 25
    assert parsed.max_pending == 0
    assert parsed.activation_timeout == 1.5
    assert parsed.cloudevents == routing.CloudEventsFilter(
        enabled=True, types=frozenset({"order.created", "order.paid"})
    )


def test_every_bad_key_is_reported_at_once_with_its_value() -> None:
    found = problems(
        {
            P + "http-service": "Orders_Svc",
            P + "http-port": "70000",
            P + "http-host": "bad host:80",
            P + "concurrency-per-replica": "0",
            P + "max-pending": "-1",
            P + "activation-timeout": "10",
            P + "cloudevents": "yes",
            P + "cloudevents-types": "a,,b",
        }
    )
    assert set(found) == {
        "http-service",
        "http-port",
        "http-host",
        "concurrency-per-replica",
        "max-pending",
        "activation-timeout",
        "cloudevents",
        "cloudevents-types",
    }
    assert found["http-port"].value == "70000"
    assert found["activation-timeout"].value == "10"
    assert "'500ms'" in found["activation-timeout"].allowed


def test_a_missing_http_port_is_a_problem() -> None:
    found = problems({P + "http-service": "orders"})
    assert found["http-port"].value is None
    assert "required" in found["http-port"].allowed


def test_cloudevents_types_without_cloudevents_is_a_conflict() -> None:
    found = problems({P + "http-service": "orders", P + "http-port": "80", P + "cloudevents-types": "a"})
    assert set(found) == {"cloudevents-types"}


@pytest.mark.parametrize(("value", "seconds"), [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0)])
def test_durations_take_the_documented_units(value: str, seconds: float) -> None:
    parsed = route({P + "http-service": "o", P + "http-port": "80", P + "activation-timeout": value})
    assert parsed.activation_timeout == seconds


@pytest.mark.parametrize("value", ["0s", "2h", "1.5s", "s", "5 m", "-1s"])
def test_out_of_range_or_malformed_durations_are_refused(value: str) -> None:
    assert "activation-timeout" in problems(
        {P + "http-service": "o", P + "http-port": "80", P + "activation-timeout": value}
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("orders.shop", "orders.shop"),
        ("ORDERS.Shop:8080", "orders.shop"),
        ("orders.shop.", "orders.shop"),
        ("orders.shop:", "orders.shop"),
        ("[::1]:80", "[::1]"),
        ("orders.shop:http", None),
        ("[::1", None),
        ("", None),
        (None, None),
    ],
)
def test_host_headers_are_normalized_or_refused(header: str | None, expected: str | None) -> None:
    assert routing.normalize_host(header) == expected


def test_the_table_finds_a_route_by_any_of_its_hosts_in_any_case_and_with_a_port() -> None:
    table = routing.RouteTable()
    orders = route(
        {P + "http-service": "orders", P + "http-port": "80", P + "http-host": "orders.example.com"}
    )
    table.put(orders)
    for host in [
        "orders.shop",
        "Orders.Shop.SVC",
        "orders.shop.svc.cluster.local:80",
        "orders.example.com:8443",
    ]:
        assert table.lookup(host) == orders
    assert table.lookup("orders") is None
    assert table.lookup("orders.shop.svc.cluster") is None
    assert table.lookup("payments.shop") is None


def test_removing_a_route_removes_its_hosts() -> None:
    table = routing.RouteTable()
    orders = route({P + "http-service": "orders", P + "http-port": "80", P + "http-host": "x.example"})
    table.put(orders)
    assert table.remove(orders.target) == orders
    assert table.lookup("x.example") is None
    assert table.lookup("orders.shop") is None
    assert len(table) == 0


def test_replacing_a_route_drops_hosts_it_no_longer_has() -> None:
    table = routing.RouteTable()
    table.put(route({P + "http-service": "orders", P + "http-port": "80", P + "http-host": "old.example"}))
    table.put(route({P + "http-service": "orders", P + "http-port": "80", P + "http-host": "new.example"}))
    assert table.lookup("old.example") is None
    assert table.lookup("new.example") is not None


def test_a_host_claimed_by_two_targets_goes_to_the_smallest_target_whatever_the_order() -> None:
    claim = {P + "http-service": "s", P + "http-port": "80", P + "http-host": "shared.example"}
    first = route(claim, name="b-app", namespace="ns")
    second = route(claim, name="a-app", namespace="ns")
    for order in ([first, second], [second, first]):
        table = routing.RouteTable()
        for item in order:
            table.put(item)
        found = table.lookup("shared.example")
        assert found is not None
        assert found.target == TargetKey("ns", "a-app")
    table.remove(TargetKey("ns", "a-app"))
    found = table.lookup("shared.example")
    assert found is not None
    assert found.target == TargetKey("ns", "b-app")


def test_a_custom_cluster_domain_is_routed() -> None:
    parsed = routing.parse_route(
        namespace="shop",
        name="orders",
        annotations={P + "http-service": "o", P + "http-port": "80"},
        cluster_domain="corp.internal",
    )
    assert parsed is not None
    assert "orders.shop.svc.corp.internal" in parsed.hosts
