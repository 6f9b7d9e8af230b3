"""EndpointSlices -> ready, non-terminating addresses and ports per Service, merged over all its slices."""

from __future__ import annotations

from typing import Any

from autoscaler.kube import endpointslices, watch
from autoscaler.kube.endpointslices import ServiceEndpoints, ServiceKey

WEB = ServiceKey("ns", "web")


def endpoint(address: str, *, ready: bool | None = True, terminating: bool | None = None) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    if ready is not None:
        conditions["ready"] = ready
    if terminating is not None:
        conditions["terminating"] = terminating
    return {"addresses": [address], "conditions": conditions}


def raw_slice(
    name: str,
    endpoints: list[dict[str, Any]],
    *,
    service: str = "web",
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "resourceVersion": "1",
            "labels": {endpointslices.SERVICE_NAME_LABEL: service},
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
    }


def parsed(name: str, endpoints: list[dict[str, Any]], **kwargs: Any) -> endpointslices.Slice:
    return endpointslices.parse_slice(raw_slice(name, endpoints, **kwargs))


def test_only_ready_non_terminating_endpoints_count_and_unset_ready_counts_as_ready() -> None:
    one = parsed(
        "web-1",
        [
            endpoint("10.0.0.1"),
            endpoint("10.0.0.2", ready=None),
            endpoint("10.0.0.3", ready=False),
            endpoint("10.0.0.4", ready=True, terminating=True),
            endpoint("10.0.0.5", ready=False, terminating=True),
        ],
    )
    assert one.addresses == frozenset({"10.0.0.1", "10.0.0.2"})
    assert one.service_key == WEB


def test_ports_are_by_name_with_unnamed_under_the_empty_key_and_only_tcp() -> None:
    one = parsed(
        "web-1",
        [],
        ports=[
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"port": 9090},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "any"},
        ],
    )
    assert one.ports == (("http", 8080), ("", 9090))


def test_fqdn_slices_contribute_no_addresses() -> None:
    assert parsed("web-1", [endpoint("example.com")], address_type="FQDN").addresses == frozenset()


def test_all_slices_of_a_service_merge_and_ready_slices_win_a_port_disagreement() -> None:
    merged = endpointslices.merge(
        WEB,
        [
            parsed("web-a", [endpoint("10.0.0.9", ready=False)], ports=[{"name": "http", "port": 1111}]),
            parsed("web-b", [endpoint("10.0.0.1")], ports=[{"name": "http", "port": 8080}]),
            parsed("web-c", [endpoint("fd00::1")], ports=[{"name": "http", "port": 2222}, {"port": 7000}]),
        ],
    )
    assert merged == ServiceEndpoints(
        "ns", "web", frozenset({"10.0.0.1", "fd00::1"}), {"http": 8080, "": 7000}, frozenset({"10.0.0.9"})
    )


def test_the_cache_reports_a_service_when_a_slice_changes_its_ready_set_and_only_then() -> None:
    cache = endpointslices.SliceCache()
    two_ready = parsed("web-1", [endpoint("10.0.0.1"), endpoint("10.0.0.2")])

    assert cache.apply(watch.Listed((two_ready,), "1")) == [
        (WEB, ServiceEndpoints("ns", "web", frozenset({"10.0.0.1", "10.0.0.2"}), {"http": 8080}))
    ]
    assert cache.apply(watch.Modified(two_ready)) == []
    one_terminating = parsed(
        "web-1", [endpoint("10.0.0.1"), endpoint("10.0.0.2", ready=False, terminating=True)]
    )
    assert cache.apply(watch.Modified(one_terminating)) == [
        (WEB, ServiceEndpoints("ns", "web", frozenset({"10.0.0.1"}), {"http": 8080}))
    ]


def test_a_service_is_removed_when_its_last_slice_goes() -> None:
    cache = endpointslices.SliceCache()
    first, second = parsed("web-1", [endpoint("10.0.0.1")]), parsed("web-2", [endpoint("10.0.0.2")])
    cache.apply(watch.Added(first))
    cache.apply(watch.Added(second))

    assert cache.apply(watch.Deleted(first)) == [
        (WEB, ServiceEndpoints("ns", "web", frozenset({"10.0.0.2"}), {"http": 8080}))
    ]
    assert cache.apply(watch.Deleted(second)) == [(WEB, None)]
    assert cache.services == {}


def test_a_relist_drops_services_whose_slices_vanished() -> None:
    cache = endpointslices.SliceCache()
    cache.apply(watch.Added(parsed("web-1", [endpoint("10.0.0.1")])))
    api = parsed("api-1", [endpoint("10.0.0.7")], service="api")

    changes = cache.apply(watch.Listed((api,), "9"))

    assert changes == [
        (ServiceKey("ns", "api"), ServiceEndpoints("ns", "api", frozenset({"10.0.0.7"}), {"http": 8080})),
        (WEB, None),
    ]
