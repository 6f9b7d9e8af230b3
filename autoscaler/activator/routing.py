"""Host -> target routes: a Deployment's ScalingPolicy as a frozen Route, looked up by Host.

The annotations are parsed by ``policy.annotations`` alone; the hosts each target may be reached by are
decided by ``policy.hosts`` over all routed targets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, cast

from autoscaler.errors import AnnotationProblem
from autoscaler.model import TargetKey
from autoscaler.policy import hosts
from autoscaler.policy.annotations import ScalingPolicy

CLUSTER_DOMAIN: Final[str] = hosts.CLUSTER_DOMAIN

_HOST_PORT_RE = re.compile(r"^[0-9]{0,5}$")


@dataclass(frozen=True, slots=True)
class CloudEventsFilter:
    """Whether requests must be CloudEvents 1.0, and which ``type`` values are accepted (None: any)."""

    enabled: bool = False
    types: frozenset[str] | None = None

    def accepts(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types


@dataclass(frozen=True, slots=True)
class Route:
    """Where the activator sends requests for one Deployment, and how long and how many it may hold.

    ``port`` is ``http-port``: a port the pods listen on, a Service port name, or None for the Service's
    only port. ``host`` is the ``http-host`` claim, routed only when ``policy.hosts`` grants it; ``created``
    (the Deployment's creationTimestamp) decides which of two claims is the earlier one.
    """

    target: TargetKey
    service: str
    port: int | str | None = None
    host: str | None = None
    created: datetime | None = None
    cloudevents: CloudEventsFilter = CloudEventsFilter()
    max_pending: int = 1000
    activation_timeout: float = 60.0
    concurrency_per_replica: int = 10
    # Bounds how many endpoints a wake-up waits for.
    max_replicas: int = 100


def route_for(target: TargetKey, policy: ScalingPolicy, *, created: datetime | None = None) -> Route | None:
    """The route of a target from its policy, or None when the policy has no ``http-service``."""
    if policy.http_service is None:
        return None
    return Route(
        target=target,
        service=policy.http_service,
        port=policy.http_port,
        host=policy.http_host,
        created=created,
        cloudevents=CloudEventsFilter(enabled=policy.cloudevents, types=policy.cloudevents_types),
        max_pending=policy.max_pending,
        activation_timeout=policy.activation_timeout.total_seconds(),
        concurrency_per_replica=policy.concurrency_per_replica,
        max_replicas=policy.max_replicas,
    )


def normalize_host(value: str | None) -> str | None:
    """A Host header value without port, lowercase, without a trailing dot; None when it is not a host."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("["):
        literal, bracket, rest = text[1:].partition("]")
        if not bracket or not literal or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return "[" + literal.lower() + "]"
    host, _, port = text.partition(":")
    if not _HOST_PORT_RE.match(port):
        return None
    host = host.lower().rstrip(".")
    return host or None


_UNKNOWN: Final = object()
_MAX_FOUND: Final = 1024


class RouteTable:
    """The routes known to this activator, by target, and their hosts as ``policy.hosts`` decides them.

    Ownership is recomputed over every route after a change (lazily, at the next lookup), so every activator
    replica seeing the same Deployments routes every host to the same target.
    """

    def __init__(self, *, cluster_domain: str = CLUSTER_DOMAIN, cross_namespace: bool = False) -> None:
        self._routes: dict[TargetKey, Route] = {}
        self._cluster_domain = cluster_domain
        self._cross_namespace = cross_namespace
        self._ownership: hosts.Ownership | None = None
        # Host header value -> route, as ``lookup`` last found it; emptied by every change (and when full).
        self._found: dict[str, Route | None] = {}
        # (namespace, Service) -> the targets routed to it: an EndpointSlice change finds its routes at once.
        self._by_service: dict[tuple[str, str], set[TargetKey]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, target: object) -> bool:
        return target in self._routes

    def routes(self) -> tuple[Route, ...]:
        return tuple(self._routes[key] for key in sorted(self._routes))

    def get(self, target: TargetKey) -> Route | None:
        return self._routes.get(target)

    def of_service(self, namespace: str, service: str) -> tuple[Route, ...]:
        """The routes whose requests go to that Service, by target."""
        targets = self._by_service.get((namespace, service))
        return () if not targets else tuple(self._routes[key] for key in sorted(targets))

    def put(self, route: Route) -> Route | None:
        """Adds or replaces the route of ``route.target``; returns the route it replaced."""
        old = self._routes.get(route.target)
        self._routes[route.target] = route
        if old is not None:
            self._unindex(old)
        self._by_service.setdefault((route.target.namespace, route.service), set()).add(route.target)
        self._found.clear()
        if old is None or (old.host, old.created) != (route.host, route.created):
            self._ownership = None
        return old

    def remove(self, target: TargetKey) -> Route | None:
        old = self._routes.pop(target, None)
        if old is not None:
            self._unindex(old)
            self._ownership = None
            self._found.clear()
        return old

    def _unindex(self, route: Route) -> None:
        key = (route.target.namespace, route.service)
        targets = self._by_service.get(key)
        if targets is not None:
            targets.discard(route.target)
            if not targets:
                del self._by_service[key]

    def ownership(self) -> hosts.Ownership:
        if self._ownership is None:
            self._ownership = hosts.resolve(
                (hosts.Claimant(r.target, r.created, r.host) for r in self._routes.values()),
                cluster_domain=self._cluster_domain,
                cross_namespace=self._cross_namespace,
            )
        return self._ownership

    def refused(self) -> Mapping[TargetKey, AnnotationProblem]:
        """The refused ``http-host`` claims, by claimant."""
        return self.ownership().refused

    def hosts_of(self, target: TargetKey) -> frozenset[str]:
        """Every host routed to ``target``."""
        return frozenset(host for host, owner in self.ownership().owners.items() if owner == target)

    def lookup(self, host_header: str | None) -> Route | None:
        """The route for a Host header value (any case, with or without port), or None."""
        if host_header is None:
            return None
        found = self._found.get(host_header, _UNKNOWN)
        if found is not _UNKNOWN:
            return cast(Route | None, found)
        host = normalize_host(host_header)
        owner = None if host is None else self.ownership().owners.get(host)
        route = None if owner is None else self._routes.get(owner)
        if len(self._found) >= _MAX_FOUND:
            self._found.clear()
        self._found[host_header] = route
        return route
