"""Wiring of `queue-autoscaler activator`: Deployment and EndpointSlice watches, the leader URL, serving."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry

from autoscaler import errors, settings
from autoscaler.activator import guard, loops, processes, proxy, server, serving, watching
from autoscaler.kube import client as kube_client
from autoscaler.kube import endpointslices, leases, targets
from autoscaler.observability import http as obs_http
from autoscaler.observability import logging as obs_logging
from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger("autoscaler")


def run_activator(cfg: settings.ActivatorSettings) -> int:
    obs_logging.configure(log_format=cfg.log_format, level="info")
    loops.factory(cfg.event_loop)  # an unknown or unavailable loop stops the start, before any process
    if cfg.processes == 1:
        return loops.run(_activator(cfg), event_loop=cfg.event_loop)
    try:
        port, held = processes.reserve(cfg.listen_host, cfg.port)
    except OSError as exc:
        if exc.errno not in obs_http.LISTEN_ERRNOS:
            raise
        raise obs_http.listen_error(exc, host=cfg.listen_host, flags={"--port": cfg.port}) from None
    try:
        return processes.supervise([_one_process(cfg, n, port) for n in range(cfg.processes)])
    finally:
        for sock in held:
            sock.close()


def _one_process(cfg: settings.ActivatorSettings, n: int, port: int) -> Callable[[], int]:
    """Process ``n`` of a multi-process activator: the shared proxy port, its own identity and metrics."""
    one = dataclasses.replace(
        cfg,
        port=port,
        metrics_port=cfg.metrics_port + n if cfg.metrics_port else 0,
        identity=f"{cfg.identity}-{n}",
        processes=1,
        reuse_port=True,
    )

    def run() -> int:
        try:
            return loops.run(_activator(one), event_loop=one.event_loop)
        except errors.AutoscalerError as exc:  # as the command does for one process: one line, status 1
            print(f"queue-autoscaler activator (process {n}): {exc}", file=sys.stderr)
            return 1

    return run


async def _activator(cfg: settings.ActivatorSettings) -> int:
    registry = CollectorRegistry()
    api = await kube_client.connect(kubeconfig=str(cfg.kube.kubeconfig) if cfg.kube.kubeconfig else None)
    activator = server.Activator(
        registry=registry,
        max_in_flight=cfg.max_in_flight,
        limits=proxy.Limits(
            max_request_body=cfg.max_body_bytes,
            body_idle_timeout=cfg.body_idle_timeout,
            max_connections_per_endpoint=cfg.max_connections_per_endpoint,
        ),
        connection_limits=guard.ConnectionLimits(
            header_timeout=cfg.header_timeout, max_connections_per_client=cfg.max_connections_per_client
        ),
        cross_namespace_hosts=cfg.cross_namespace_hosts,
    )
    namespaces = cfg.kube.namespaces or None
    # The router needs the slices' snapshot and the slice watch calls the router: bind it late.
    slices = endpointslices.EndpointSliceWatch(
        api, namespaces=namespaces, on_change=lambda key, _: router.service_changed(key.namespace, key.name)
    )
    router = watching.EndpointRouter(
        activator, lambda namespace, name: slices.service(endpointslices.ServiceKey(namespace, name))
    )
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

        def listening(bound: serving.Listening) -> None:
            # What is alive once serving (modules, routes, the watches' snapshots) lives as long as the
            # process: moved out of the collector's generations, so its passes look at requests' garbage only.
            gc.freeze()
            for endpoint, ports in (("proxy", bound.proxy_ports), ("metrics", bound.admin_ports)):
                if len(set(ports)) > 1:
                    log.info("listening", endpoint=endpoint, port=ports[0], ports=list(ports))
                elif ports:
                    log.info("listening", endpoint=endpoint, port=ports[0])

        try:
            result = await serving.serve(
                activator=activator,
                stop=serving.stop_on_signals(),
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
                reuse_port=cfg.reuse_port,
            )
        except OSError as exc:  # a port that cannot be listened on: one line naming its flag
            if exc.errno not in obs_http.LISTEN_ERRNOS:
                raise
            ports = {"--port": cfg.port, "--metrics-port": cfg.metrics_port}
            raise obs_http.listen_error(exc, host=cfg.listen_host, flags=ports) from None
        log.info(ActivatorLog.SERVER_STOPPED, left_unanswered=result.left, drain_timed_out=result.timed_out)
        return 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()
