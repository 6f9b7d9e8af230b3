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
from autoscaler.activator import endpoints, probing, routing, server
from autoscaler.model import TargetKey
from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger(__name__)


class DeploymentView(Protocol):
    """A Deployment as the target watch reports it."""

    @property
    def annotations(self) -> Mapping[str, str]: ...

    @property
    def created(self) -> datetime | None: ...

    @property
    def readiness_probe(self) -> Mapping[str, object] | None: ...

    @property
    def container_ports(self) -> Mapping[str, int]: ...


class ServiceView(Protocol):
    """A Service's endpoints over all its EndpointSlices: ready addresses, ports by name (unnamed: "")."""

    @property
    def addresses(self) -> frozenset[str]: ...

    @property
    def ports(self) -> Mapping[str, int]: ...

    @property
    def not_ready(self) -> frozenset[str]: ...


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

    Targets and EndpointSlices change independently (two watches), so both lead to ``_update``. With
    ``probe_interval``, a target with queued requests also gets the starting pods that passed the activator's
    own run of their readiness probe (``probing``), until the slices say ready or drop them, or the pod
    refuses a connection (then it is probed again).
    """

    def __init__(
        self, activator: server.Activator, services: ServiceLookup, *, probe_interval: float | None = 0.03
    ) -> None:
        self._activator = activator
        self._services = services
        self._probes: dict[TargetKey, probing.Probe] = {}
        self._probed: dict[TargetKey, set[str]] = {}
        activator.on_refused = self._refused
        if probe_interval is not None:
            activator.prober = probing.Prober(
                candidates=self._candidates,
                passed=self._passed,
                queued=activator.buffer.queued,
                interval=probe_interval,
            )

    def _candidates(self, target: TargetKey) -> tuple[probing.Probe, frozenset[str]] | None:
        probe, route = self._probes.get(target), self._activator.routes.get(target)
        if probe is None or route is None:
            return None
        service = self._services(target.namespace, route.service)
        if service is None:
            return None
        return probe, service.not_ready - self._probed.get(target, set())

    def _passed(self, target: TargetKey, ip: str) -> None:
        route = self._activator.routes.get(target)
        if route is not None:
            self._probed.setdefault(target, set()).add(ip)
            self._update(route)

    def _refused(self, target: TargetKey, address: endpoints.Address) -> None:
        """A probed address that refuses connections is starting again (its pod died after the probe):
        it leaves the target's endpoints and is probed again while requests are queued."""
        probed = self._probed.get(target)
        route = self._activator.routes.get(target)
        if probed is None or address.ip not in probed or route is None:
            return
        probed.discard(address.ip)
        log.info(
            ActivatorLog.PROBE_REVOKED, namespace=target.namespace, deployment=target.name, ip=address.ip
        )
        self._update(route)

    def deployment_changed(self, key: TargetKey, info: DeploymentView | None) -> None:
        if info is None:
            self._forget(key)
            self._activator.remove_target(key)
            self._activator.endpoints.forget(key)
            return
        probe = probing.probe_from(info.readiness_probe, info.container_ports)
        if probe is None:
            self._probes.pop(key, None)
        else:
            self._probes[key] = probe
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
            self._forget(key)
            self._activator.endpoints.forget(key)
        else:
            self._update(route)

    def _forget(self, key: TargetKey) -> None:
        self._probes.pop(key, None)
        self._probed.pop(key, None)

    def service_changed(self, namespace: str, name: str) -> None:
        for route in self._activator.routes.of_service(namespace, name):
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
        # A probed address counts until the slices list it as ready or stop listing it.
        probed = self._probed.get(route.target)
        if probed is not None:
            probed &= service.not_ready
            if not probed:
                del self._probed[route.target]
        addresses = service.addresses | (probed or set())
        self._activator.endpoints.update(
            route.target, [endpoints.Address(ip, port) for ip in sorted(addresses)]
        )
