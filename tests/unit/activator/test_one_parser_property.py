"""Whatever the annotations, the activator routes exactly what the controller's parser accepts, as read."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from autoscaler import errors
from autoscaler.activator import server
from autoscaler.model import TargetKey
from autoscaler.policy import annotations as contract
from autoscaler.policy import hosts

TARGET = TargetKey("shop", "orders")
KEYS = [
    "http-service",
    "http-port",
    "http-host",
    "concurrency-per-replica",
    "max-pending",
    "activation-timeout",
    "cloudevents",
    "cloudevents-types",
    "max-replicas",
    "min-replicas",
    "kafka-group",
    "trigger",
    "lag-per-replica",
    "paused",
    "no-such-key",
]
INTERESTING = [
    "",
    " ",
    "0",
    "1",
    "80",
    "8080",
    "65535",
    "65536",
    "-1",
    "http",
    "http-alt",
    "web--port",
    "a-very-long-port-name",
    "Orders",
    "orders",
    "orders.example.com",
    "a.example.com,b.example.com",
    "web.qa1",
    "bad_host",
    "500ms",
    "30s",
    "1m30s",
    "2h",
    "8761h",
    "10",
    "true",
    "false",
    "yes",
    "a,b",
    "a,,b",
    "order.created, order.paid",
    "99999999999999999999999999999999",
]
VALUES = st.one_of(st.sampled_from(INTERESTING), st.text(max_size=20))
ANNOTATIONS = st.dictionaries(
    st.sampled_from(KEYS).map(lambda key: contract.PREFIX + key), VALUES, max_size=8
)


@given(given_annotations=ANNOTATIONS)
@settings(max_examples=400, deadline=None)
def test_the_activator_routes_exactly_what_the_controller_accepts_with_the_same_values(
    given_annotations: dict[str, str],
) -> None:
    activator = server.Activator(registry=CollectorRegistry())
    controller_refused: errors.PolicyError | None = None
    try:
        policy = contract.parse(given_annotations)
    except errors.PolicyError as refused:
        controller_refused = refused
    if controller_refused is not None:
        with pytest.raises(errors.PolicyError) as activator_refused:
            activator.apply_deployment(namespace="shop", name="orders", annotations=given_annotations)
        assert activator_refused.value.problems == controller_refused.problems
        assert TARGET not in activator.routes
        return
    route = activator.apply_deployment(namespace="shop", name="orders", annotations=given_annotations)
    if policy is None or policy.http_service is None:
        assert route is None
        assert TARGET not in activator.routes
        return
    assert route is not None
    assert activator.routes.get(TARGET) == route
    assert (
        route.service,
        route.port,
        route.host,
        route.concurrency_per_replica,
        route.max_pending,
        route.activation_timeout,
        route.cloudevents.enabled,
        route.cloudevents.types,
        route.max_replicas,
    ) == (
        policy.http_service,
        policy.http_port,
        policy.http_host,
        policy.concurrency_per_replica,
        policy.max_pending,
        policy.activation_timeout.total_seconds(),
        policy.cloudevents,
        policy.cloudevents_types,
        policy.max_replicas,
    )
    alone = hosts.default_hosts(TARGET)
    if policy.http_host is not None and hosts.named_namespace(policy.http_host) in (None, "shop"):
        alone |= {policy.http_host}
    assert activator.routes.hosts_of(TARGET) == alone
