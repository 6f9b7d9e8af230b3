"""Wiring of `queue-autoscaler activator`: Deployment and EndpointSlice watches, the leader URL, serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import structlog
from prometheus_client import CollectorRegistry

from autoscaler import errors, settings
from autoscaler.activator import endpoints, proxy, routing, server
from autoscaler.kube import client as kube_client
from autoscaler.kube import endpointslices, leases, targets
from autoscaler.model import TargetKey
from autoscaler.observability import logging as obs_logging

log = structlog.get_logger("autoscaler")


def run_activator(cfg: settings.ActivatorSettings) -> int:
    obs_logging.configure(log_format=cfg.log_format, level="info")
    return asyncio.run(_activator(cfg))


class EndpointRouter:
    """Feeds the activator the ready endpoints of each routed target's Service, on the target's port.

    Targets and EndpointSlices change independently (two watches), so both call ``refresh``.
    """

    def __init__(self, activator: server.Activator, slices: endpointslices.EndpointSliceWatch) -> None:
        self._activator = activator
        self._slices = slices

    def deployment_changed(self, key: TargetKey, info: targets.DeploymentInfo | None) -> None:
        if info is None:
            self._activator.remove_target(key)
            self._activator.endpoints.forget(key)
            return
        try:
            route = self._activator.apply_deployment(
                namespace=key.namespace, name=key.name, annotations=info.annotations
            )
        except errors.PolicyError as exc:
            log.warning(
                "invalid annotations", namespace=key.namespace, deployment=key.name, problems=str(exc)
            )
            return
        if route is None:
            self._activator.endpoints.forget(key)
        else:
            self._update(route)

    def service_changed(self, key: endpointslices.ServiceKey, _: object) -> None:
        for route in self._activator.routes.routes():
            if route.target.namespace == key.namespace and route.service == key.name:
                self._update(route)

    def _update(self, route: routing.Route) -> None:
        service = self._slices.snapshot().get(
            endpointslices.ServiceKey(route.target.namespace, route.service)
        )
        if service is None:
            self._activator.endpoints.update(route.target, [])
            return
        port = _endpoint_port(route.port, service.ports)
        if port is None:
            log.warning(
                "no such port on the service's endpoints",
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


def _endpoint_port(wanted: int | str, ports: Mapping[str, int]) -> int | None:
    """The endpoint port for ``http-port``: a port name, a pod port, or the only port the slices list."""
    if isinstance(wanted, str):
        return ports.get(wanted)
    if wanted in ports.values() or not ports:
        return wanted
    return next(iter(ports.values())) if len(ports) == 1 else None


def listening_ports(addresses: Sequence[object]) -> tuple[list[int], list[int]]:
    """The proxy's and the metrics endpoint's bound ports, from the addresses ``server.serve`` reports.

    ``serve`` lists the proxy's sockets first, then the metrics endpoint's. Both listen on the same host,
    so each has one socket per address the host resolves to (the empty host: IPv4 and IPv6, each with a
    port of its own when the port is 0): the first half of the list is the proxy's.
    """
    ports = [a[1] for a in addresses if isinstance(a, tuple) and len(a) >= 2 and isinstance(a[1], int)]
    half = len(ports) // 2
    return ports[:half] if half else ports, ports[half:] if half else []


async def _activator(cfg: settings.ActivatorSettings) -> int:
    registry = CollectorRegistry()
    api = await kube_client.connect(kubeconfig=str(cfg.kube.kubeconfig) if cfg.kube.kubeconfig else None)
    activator = server.Activator(
        registry=registry,
        max_in_flight=cfg.max_in_flight,
        limits=proxy.Limits(max_request_body=cfg.max_body_bytes),
    )
    namespaces = cfg.kube.namespaces or None
    # The router needs the slices' snapshot and the slice watch calls the router: bind it late.
    slices = endpointslices.EndpointSliceWatch(
        api, namespaces=namespaces, on_change=lambda key, found: router.service_changed(key, found)
    )
    router = EndpointRouter(activator, slices)
    deployments = targets.TargetWatch(api, namespaces=namespaces, on_change=router.deployment_changed)
    leader: str | Callable[[], str | None] | None = cfg.controller_url
    tasks = [
        asyncio.create_task(slices.run(), name="endpointslice watch"),
        asyncio.create_task(deployments.run(), name="deployment watch"),
    ]
    if leader is None:
        lookup = leases.LeaderURL(
            api, namespace=cfg.lease_namespace, name=cfg.lease_name, every=cfg.report_interval
        )
        tasks.append(asyncio.create_task(lookup.run(), name="leader lookup"))
        leader = lookup
    try:
        await asyncio.wait_for(asyncio.gather(slices.synced.wait(), deployments.synced.wait()), timeout=120)

        def listening(addresses: list[object]) -> None:
            for endpoint, ports, configured in zip(
                ("proxy", "metrics"), listening_ports(addresses), (cfg.port, cfg.metrics_port), strict=True
            ):
                if len(set(ports)) > 1:
                    log.info("listening", endpoint=endpoint, port=ports[0], ports=ports)
                else:
                    log.info("listening", endpoint=endpoint, port=ports[0] if ports else configured)

        result = await server.serve(
            activator=activator,
            stop=server.stop_on_signals(),
            host=cfg.listen_host,
            port=cfg.port,
            admin_host=cfg.listen_host,
            admin_port=cfg.metrics_port,
            controller_url=leader,
            token=cfg.report_token or "",
            activator_name=cfg.identity,
            report_interval=cfg.report_interval,
            drain_timeout=cfg.drain_timeout,
            on_listening=listening,
        )
        log.info("activator stopped", left_unanswered=result.left, drain_timed_out=result.timed_out)
        return 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()
