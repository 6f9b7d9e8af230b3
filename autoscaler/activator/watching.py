"""What the Deployment and EndpointSlice watches feed the activator: routes, and each route's endpoints.

The watches themselves live in ``kube``; this module sees them through two small Protocols, so the
activator never imports the adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

import structlog

from autoscaler import errors
from autoscaler.activator import endpoints, routing, server
from autoscaler.model import TargetKey
from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger(__name__)


class DeploymentView(Protocol):
    """A Deployment as the target watch reports it."""

    @property
    def annotations(self) -> Mapping[str, str]: ...

    @property
    def created(self) -> datetime | None: ...


class ServiceView(Protocol):
    """A Service's endpoints over all its EndpointSlices: ready addresses, ports by name (unnamed: "")."""

    @property
    def addresses(self) -> frozenset[str]: ...

    @property
    def ports(self) -> Mapping[str, int]: ...


ServiceLookup = Callable[[str, str], ServiceView | None]
"""(namespace, service name) -> the Service's endpoints as last watched, or None when it has no slices."""


def endpoint_port(wanted: int | str | None, ports: Mapping[str, int]) -> int | None:
    """The pod port requests go to, for ``http-port`` and the ports the Service's EndpointSlices list.

    - a name: the port of that name (a Service port name);
    - a number: that port when the slices list it or list no ports at all; when the Service has exactly one
      port, that port (the number was the Service's port, which may differ from the pods' port);
    - unset: the Service's only port.

    None when there is no such port (several ports and none matches, or a name the slices do not list).
    """
    if isinstance(wanted, str):
        return ports.get(wanted)
    if wanted is not None and (wanted in ports.values() or not ports):
        return wanted
    return next(iter(ports.values())) if len(ports) == 1 else None


class EndpointRouter:
    """Feeds the activator the ready endpoints of each routed target's Service, on the target's port.

    Targets and EndpointSlices change independently (two watches), so both lead to ``_update``.
    """

    def __init__(self, activator: server.Activator, services: ServiceLookup) -> None:
        self._activator = activator
        self._services = services

    def deployment_changed(self, key: TargetKey, info: DeploymentView | None) -> None:
        if info is None:
            self._activator.remove_target(key)
            self._activator.endpoints.forget(key)
            return
        try:
            route = self._activator.apply_deployment(
                namespace=key.namespace, name=key.name, annotations=info.annotations, created=info.created
            )
        except errors.PolicyError as exc:
            log.warning(
                ActivatorLog.ANNOTATIONS_INVALID,
                namespace=key.namespace,
                deployment=key.name,
                problems=str(exc),
            )
            return
        if route is None:
            self._activator.endpoints.forget(key)
        else:
            self._update(route)

    def service_changed(self, namespace: str, name: str) -> None:
        for route in self._activator.routes.routes():
            if route.target.namespace == namespace and route.service == name:
                self._update(route)

    def _update(self, route: routing.Route) -> None:
        service = self._services(route.target.namespace, route.service)
        if service is None:
            self._activator.endpoints.update(route.target, [])
            return
        port = endpoint_port(route.port, service.ports)
        if port is None:
            if service.addresses:
                log.warning(
                    ActivatorLog.PORT_UNRESOLVED,
                    namespace=route.target.namespace,
                    deployment=route.target.name,
                    port=route.port,
                    ports=dict(service.ports),
                )
            self._activator.endpoints.update(route.target, [])
            return
        self._activator.endpoints.update(
            route.target, [endpoints.Address(ip, port) for ip in sorted(service.addresses)]
        )
