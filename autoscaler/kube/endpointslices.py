"""Ready endpoints per Service, from a watch of EndpointSlices (label ``kubernetes.io/service-name``).

An endpoint counts when its slice marks it ready (unset counts as ready) and not terminating; it leaves the
set with the slice update that says otherwise. Only IPv4/IPv6 slices are read (FQDN endpoints are never
routed to), only TCP ports, and only the first address of an endpoint (the others are interchangeable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import structlog
from kubernetes_asyncio import client

from autoscaler.kube import calls, watch

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServiceEndpoints:
    """The ready addresses of a Service over all its slices, and its ports by name (unnamed: ``""``).

    When slices disagree on the number of a port name, the slice with ready endpoints wins, then the slice
    whose name sorts first.
    """

    namespace: str
    service: str
    addresses: frozenset[str]
    ports: Mapping[str, int] = field(hash=False)
    # Addresses listed but not (yet) ready, and not terminating: a pod starting up.
    not_ready: frozenset[str] = frozenset()

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.service)


@dataclass(frozen=True, slots=True)
class Slice:
    """What one EndpointSlice contributes: its Service, ready addresses and TCP ports."""

    namespace: str
    name: str
    service: str
    addresses: frozenset[str]
    ports: tuple[tuple[str, int], ...]
    not_ready: frozenset[str] = frozenset()

    @property
    def service_key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.service)


def parse_slice(obj: calls.JSON) -> Slice:
    """An EndpointSlice's raw JSON -> Slice; ValueError without namespace, name or service label."""
    metadata = obj.get("metadata")
    namespace, name = calls.dig(metadata, "namespace"), calls.dig(metadata, "name")
    service = calls.string_map(calls.dig(metadata, "labels")).get(SERVICE_NAME_LABEL)
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        raise ValueError("EndpointSlice without metadata.namespace and metadata.name")
    if not service:
        raise ValueError(f"EndpointSlice without a {SERVICE_NAME_LABEL} label")
    addresses: set[str] = set()
    not_ready: set[str] = set()
    if obj.get("addressType") in ("IPv4", "IPv6"):
        for endpoint in obj.get("endpoints") or []:
            conditions = calls.dig(endpoint, "conditions")
            found = calls.dig(endpoint, "addresses")
            if calls.dig(conditions, "terminating") is True or not (
                isinstance(found, list) and found and isinstance(found[0], str)
            ):
                continue
            (not_ready if calls.dig(conditions, "ready") is False else addresses).add(found[0])
    ports: list[tuple[str, int]] = []
    for port in obj.get("ports") or []:
        number = calls.dig(port, "port")
        if not isinstance(number, int) or (calls.dig(port, "protocol") or "TCP") != "TCP":
            continue
        ports.append((str(calls.dig(port, "name") or ""), number))
    return Slice(namespace, name, service, frozenset(addresses), tuple(ports), frozenset(not_ready))


def merge(key: ServiceKey, slices: Iterable[Slice]) -> ServiceEndpoints:
    """The endpoints of one Service from all its slices."""
    ordered = sorted(slices, key=lambda s: (not s.addresses, s.name))
    ports: dict[str, int] = {}
    for one in ordered:
        for name, number in one.ports:
            ports.setdefault(name, number)
    addresses = frozenset().union(*(one.addresses for one in ordered))
    not_ready = frozenset().union(*(one.not_ready for one in ordered)) - addresses
    return ServiceEndpoints(key.namespace, key.name, addresses, MappingProxyType(ports), not_ready)


Change = tuple[ServiceKey, ServiceEndpoints | None]
OnChange = Callable[[ServiceKey, ServiceEndpoints | None], None]


class SliceCache:
    """The slices of one watch scope and the Services they merge into.

    ``apply`` returns the Services whose endpoints changed, with None for a Service whose last slice went.
    """

    def __init__(self) -> None:
        self.slices: dict[tuple[str, str], Slice] = {}
        self.services: dict[ServiceKey, ServiceEndpoints] = {}
        self._members: dict[ServiceKey, set[tuple[str, str]]] = {}

    def apply(self, event: watch.WatchEvent[Slice]) -> list[Change]:
        touched: set[ServiceKey] = set()
        match event:
            case watch.Listed(objects=objects):
                touched.update(self.services)
                self.slices.clear()
                self._members.clear()
                for one in objects:
                    self._put(one, touched)
            case watch.Added(object=one) | watch.Modified(object=one):
                self._put(one, touched)
            case watch.Deleted(object=one):
                self._drop((one.namespace, one.name), touched)
        return self._recompute(touched)

    def _put(self, one: Slice, touched: set[ServiceKey]) -> None:
        slice_key = (one.namespace, one.name)
        self._drop(slice_key, touched)
        self.slices[slice_key] = one
        self._members.setdefault(one.service_key, set()).add(slice_key)
        touched.add(one.service_key)

    def _drop(self, slice_key: tuple[str, str], touched: set[ServiceKey]) -> None:
        old = self.slices.pop(slice_key, None)
        if old is None:
            return
        members = self._members.get(old.service_key)
        if members is not None:
            members.discard(slice_key)
            if not members:
                del self._members[old.service_key]
        touched.add(old.service_key)

    def _recompute(self, touched: Iterable[ServiceKey]) -> list[Change]:
        changes: list[Change] = []
        for key in sorted(touched):
            members = self._members.get(key)
            if not members:
                if self.services.pop(key, None) is not None:
                    changes.append((key, None))
                continue
            merged = merge(key, (self.slices[slice_key] for slice_key in members))
            if self.services.get(key) != merged:
                self.services[key] = merged
                changes.append((key, merged))
        return changes


class EndpointSliceWatch(watch.ScopedWatches[Slice]):
    """Watches EndpointSlices in all namespaces (``namespaces=None``) or in each given namespace.

    ``synced`` is set once every namespace was listed; ``snapshot()`` is a copy of the current endpoints by
    Service; after every change ``on_change(key, endpoints or None)`` is called (None: the Service's last
    slice is gone) and ``changed`` is set (the consumer clears it).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespaces: Sequence[str] | None = None,
        on_change: OnChange | None = None,
        timeout_seconds: int | None = None,
    ) -> None:
        discovery = client.DiscoveryV1Api(api)
        scopes = watch.namespace_scopes(
            all_namespaces=discovery.list_endpoint_slice_for_all_namespaces,
            namespaced=discovery.list_namespaced_endpoint_slice,
            namespaces=namespaces,
            kind="endpointslices",
        )
        super().__init__(
            scopes, parse=parse_slice, label_selector=SERVICE_NAME_LABEL, timeout_seconds=timeout_seconds
        )
        self._caches = [SliceCache() for _ in self.watches]
        self._on_change = on_change

    def snapshot(self) -> Mapping[ServiceKey, ServiceEndpoints]:
        merged: dict[ServiceKey, ServiceEndpoints] = {}
        for cache in self._caches:
            merged.update(cache.services)
        return MappingProxyType(merged)

    def service(self, key: ServiceKey) -> ServiceEndpoints | None:
        """One Service's endpoints as ``snapshot`` has them, without copying every other Service's."""
        for cache in reversed(self._caches):
            found = cache.services.get(key)
            if found is not None:
                return found
        return None

    def handle(self, index: int, event: watch.WatchEvent[Slice]) -> bool:
        changes = self._caches[index].apply(event)
        for key, endpoints in changes:
            log.debug(
                "kube.endpoints.changed",
                namespace=key.namespace,
                service=key.name,
                addresses=None if endpoints is None else sorted(endpoints.addresses),
            )
            if self._on_change is not None:
                self._on_change(key, endpoints)
        return bool(changes)
