"""Routes from the one annotation parser, Host lookup, and host ownership in the route table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry

from autoscaler import errors
from autoscaler.activator import routing, server
from autoscaler.model import TargetKey
from autoscaler.observability.log_events import ActivatorLog
from autoscaler.policy import annotations as contract
from autoscaler.policy.annotations import PREFIX as P

ORDERS = TargetKey("shop", "orders")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def route(
    given: dict[str, str],
    *,
    name: str = "orders",
    namespace: str = "shop",
    created: datetime | None = None,
) -> routing.Route:
    policy = contract.parse(given)
    assert policy is not None
    made = routing.route_for(TargetKey(namespace, name), policy, created=created)
    assert made is not None
    return made


def applied(given: dict[str, str]) -> routing.Route | None:
    """What a fresh activator routes for shop/orders with these annotations."""
    activator = server.Activator(registry=CollectorRegistry())
    return activator.apply_deployment(namespace="shop", name="orders", annotations=given)


def refused_keys(given: dict[str, str]) -> set[str]:
    activator = server.Activator(registry=CollectorRegistry())
    with pytest.raises(errors.PolicyError) as caught:
        activator.apply_deployment(namespace="shop", name="orders", annotations=given)
    assert ORDERS not in activator.routes
    return {problem.key for problem in caught.value.problems}


def test_a_deployment_without_http_service_has_no_route() -> None:
    assert applied({P + "kafka-group": "g"}) is None


def test_defaults_apply_when_only_the_service_is_given() -> None:
    parsed = applied({P + "http-service": "orders"})
    assert parsed == routing.Route(target=ORDERS, service="orders")
    assert parsed.port is None
    assert parsed.max_pending == 1000
    assert parsed.activation_timeout == 60.0
    assert parsed.concurrency_per_replica == 10
    assert parsed.max_replicas == 100
    assert parsed.cloudevents == routing.CloudEventsFilter(enabled=False, types=None)


def test_every_http_annotation_reaches_the_route() -> None:
    parsed = applied(
        {
            P + "http-service": "orders-svc",
            P + "http-port": "http",
            P + "http-host": "Orders.Example.com",
            P + "concurrency-per-replica": "25",
            P + "max-pending": "3",
            P + "activation-timeout": "1500ms",
            P + "cloudevents": "true",
            P + "cloudevents-types": "order.created, order.paid",
            P + "max-replicas": "7",
        }
    )
    assert parsed == routing.Route(
        target=ORDERS,
        service="orders-svc",
        port="http",
        host="orders.example.com",
        cloudevents=routing.CloudEventsFilter(enabled=True, types=frozenset({"order.created", "order.paid"})),
        max_pending=3,
        activation_timeout=1.5,
        concurrency_per_replica=25,
        max_replicas=7,
    )


# The five places where the activator's own parser and the controller's once disagreed.


def test_a_port_name_is_a_valid_http_port_for_the_controller_and_the_activator() -> None:
    given = {P + "http-service": "orders", P + "http-port": "http"}
    policy = contract.parse(given)
    assert policy is not None
    assert policy.http_port == "http"
    parsed = applied(given)
    assert parsed is not None
    assert parsed.port == "http"


def test_a_max_pending_of_zero_is_refused_by_the_activator_as_by_the_controller() -> None:
    given = {P + "http-service": "orders", P + "max-pending": "0"}
    with pytest.raises(errors.PolicyError):
        contract.parse(given)
    assert refused_keys(given) == {"max-pending"}


def test_an_http_host_with_two_names_is_refused_by_the_activator_as_by_the_controller() -> None:
    given = {P + "http-service": "orders", P + "http-host": "a.example.com,b.example.com"}
    with pytest.raises(errors.PolicyError):
        contract.parse(given)
    assert refused_keys(given) == {"http-host"}


def test_a_compound_activation_timeout_is_routed_as_the_controller_reads_it() -> None:
    given = {P + "http-service": "orders", P + "http-port": "8080", P + "activation-timeout": "1m30s"}
    policy = contract.parse(given)
    assert policy is not None
    assert policy.activation_timeout == timedelta(seconds=90)
    parsed = applied(given)
    assert parsed is not None
    assert parsed.activation_timeout == 90.0


def test_a_missing_http_port_is_routed_to_the_services_only_port() -> None:
    parsed = applied({P + "http-service": "orders"})
    assert parsed is not None
    assert parsed.port is None


def test_a_bad_key_of_another_source_refuses_the_route_too() -> None:
    assert refused_keys({P + "http-service": "orders", P + "lag-per-replica": "0"}) == {"lag-per-replica"}


def test_cloudevents_types_without_cloudevents_is_a_conflict() -> None:
    assert refused_keys({P + "http-service": "orders", P + "cloudevents-types": "a"}) == {"cloudevents-types"}


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
    orders = route({P + "http-service": "orders", P + "http-host": "orders.example.com"})
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
    assert table.hosts_of(ORDERS) == {
        "orders.shop",
        "orders.shop.svc",
        "orders.shop.svc.cluster.local",
        "orders.example.com",
    }


def test_removing_a_route_removes_its_hosts() -> None:
    table = routing.RouteTable()
    orders = route({P + "http-service": "orders", P + "http-host": "x.example.com"})
    table.put(orders)
    assert table.remove(orders.target) == orders
    assert table.lookup("x.example.com") is None
    assert table.lookup("orders.shop") is None
    assert len(table) == 0


def test_replacing_a_route_drops_the_host_it_no_longer_claims() -> None:
    table = routing.RouteTable()
    table.put(route({P + "http-service": "orders", P + "http-host": "old.example.com"}))
    table.put(route({P + "http-service": "orders", P + "http-host": "new.example.com"}))
    assert table.lookup("old.example.com") is None
    assert table.lookup("new.example.com") is not None


def test_a_host_claimed_by_two_targets_goes_to_the_older_whatever_the_order_and_passes_on_removal() -> None:
    claim = {P + "http-service": "s", P + "http-host": "shared.example.com"}
    older = route(claim, name="z-app", namespace="ns", created=EPOCH)
    newer = route(claim, name="a-app", namespace="ns", created=EPOCH + timedelta(seconds=1))
    for order in ([older, newer], [newer, older]):
        table = routing.RouteTable()
        for item in order:
            table.put(item)
        found = table.lookup("shared.example.com")
        assert found is not None
        assert found.target == older.target
        assert set(table.refused()) == {newer.target}
    table.remove(older.target)
    found = table.lookup("shared.example.com")
    assert found is not None
    assert found.target == newer.target
    assert not table.refused()


def test_a_claim_of_another_targets_default_host_is_never_routed() -> None:
    table = routing.RouteTable()
    web = route({P + "http-service": "web"}, name="web", namespace="qa1", created=EPOCH + timedelta(days=1))
    thief = route(
        {P + "http-service": "t", P + "http-host": "web.qa1"}, name="thief", namespace="qa0", created=EPOCH
    )
    same_namespace = route(
        {P + "http-service": "t", P + "http-host": "web.qa1"}, name="thief", namespace="qa1"
    )
    table.put(thief)
    table.put(web)
    found = table.lookup("web.qa1")
    assert found is not None
    assert found.target == web.target
    assert "default host of qa1/web" in table.refused()[thief.target].allowed
    table.put(same_namespace)
    found = table.lookup("web.qa1")
    assert found is not None
    assert found.target == web.target


def test_a_custom_cluster_domain_is_routed() -> None:
    table = routing.RouteTable(cluster_domain="corp.internal")
    table.put(route({P + "http-service": "o"}))
    assert table.lookup("orders.shop.svc.corp.internal") is not None
    assert table.lookup("orders.shop.svc.cluster.local") is None


def test_the_activator_logs_a_refused_claim_once_with_the_owner_and_again_when_it_is_granted() -> None:
    activator = server.Activator(registry=CollectorRegistry())
    web = {P + "http-service": "web"}
    thief = {P + "http-service": "t", P + "http-host": "web.qa1"}
    with structlog.testing.capture_logs() as logs:
        activator.apply_deployment(namespace="qa1", name="web", annotations=web)
        activator.apply_deployment(namespace="qa1", name="thief", annotations=thief)
        activator.apply_deployment(namespace="qa1", name="thief", annotations=thief)
        activator.remove_target(TargetKey("qa1", "web"))
    refused = [entry for entry in logs if entry["event"] == ActivatorLog.HOST_REFUSED]
    assert [(entry["deployment"], entry["problem"]) for entry in refused] == [
        ("thief", "http-host='web.qa1': a host no other target owns: web.qa1 is the default host of qa1/web")
    ]
    granted = [entry for entry in logs if entry["event"] == ActivatorLog.HOST_GRANTED]
    assert [(entry["deployment"], entry["host"]) for entry in granted] == [("thief", "web.qa1")]
    found = activator.routes.lookup("web.qa1")
    assert found is not None
    assert found.target == TargetKey("qa1", "thief")


def test_the_routes_of_a_service_follow_puts_replacements_and_removals() -> None:
    table = routing.RouteTable()
    orders = route({P + "http-service": "web"})
    billing = route({P + "http-service": "web"}, name="billing")
    other_namespace = route({P + "http-service": "web"}, namespace="stock")
    for one in (billing, orders, other_namespace):
        table.put(one)
    assert table.of_service("shop", "web") == (billing, orders)
    assert table.of_service("stock", "web") == (other_namespace,)

    moved = route({P + "http-service": "api"})
    table.put(moved)
    assert table.of_service("shop", "web") == (billing,)
    assert table.of_service("shop", "api") == (moved,)

    table.remove(billing.target)
    assert table.of_service("shop", "web") == ()
    assert table.of_service("nowhere", "web") == ()
