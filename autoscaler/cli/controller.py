"""Wiring of `queue-autoscaler run`: the Deployment watch, the Kafka readers, the loop and the lease."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime

import structlog
from prometheus_client import CollectorRegistry

from autoscaler import settings
from autoscaler.cli import backlogs as cli_backlogs
from autoscaler.control import loop as control_loop
from autoscaler.control import reports
from autoscaler.kube import client as kube_client
from autoscaler.kube import eventing as kube_eventing
from autoscaler.kube import leases, scaling, targets
from autoscaler.model import REPORT_PATH, REPORT_URL_ANNOTATION, TargetKey
from autoscaler.observability import http as obs_http
from autoscaler.observability import logging as obs_logging
from autoscaler.observability.log_events import ControlLog
from autoscaler.observability.metrics import ControllerMetrics
from autoscaler.sources import reading
from autoscaler.sources.kafka import offsets
from autoscaler.sources.kafka import pool as kafka_pool

log = structlog.get_logger("autoscaler")


class KafkaLag:
    """control_loop.LagSource over the pool of batched offset readers, one per Kafka connection (the loop's
    ``bootstrap`` is the connection key, see sources/kafka/pool.py)."""

    def __init__(self, pool: kafka_pool.ReaderPool) -> None:
        self._pool = pool

    async def read(
        self, *, bootstrap: str, groups: Sequence[control_loop.GroupRead]
    ) -> Mapping[control_loop.GroupRead, control_loop.GroupResult]:
        queries = {g: offsets.GroupQuery(g.group, g.topics or None) for g in groups}
        answer = await self._pool.read(connection=bootstrap, queries=list(queries.values()))
        return {g: answer[q] for g, q in queries.items()}


class KubeScaler:
    """control_loop.Scaler over the scale subresource, the last-active annotation and events.k8s.io."""

    def __init__(self, api: object, *, identity: str, max_bookkeeping_writes: int = 16) -> None:
        self._api = api
        self._identity = identity
        # last-active writes and the Events not part of a scale, bounded in flight: a controller starting
        # on 1,000 idle targets writes 1,000 last-active annotations at its first tick, and 1,000 requests
        # queued at once in the API client cost ~40 MiB that the process keeps. Scale patches and their
        # Events never wait for them.
        self._bookkeeping = asyncio.Semaphore(max_bookkeeping_writes)

    async def scale(self, *, target: TargetKey, replicas: int) -> int:
        return await scaling.patch_replicas(api=self._api, target=target, replicas=replicas)

    async def set_last_active(self, *, target: TargetKey, when: datetime | None) -> None:
        async with self._bookkeeping:
            await scaling.write_last_active(api=self._api, target=target, when=when)

    async def event(
        self, *, target: TargetKey, uid: str, type: str, reason: str, message: str, action: str
    ) -> None:
        if action == "Scale":
            await self._record_event(target, uid, type, reason, message, action)
            return
        async with self._bookkeeping:
            await self._record_event(target, uid, type, reason, message, action)

    async def _record_event(
        self, target: TargetKey, uid: str, type: str, reason: str, message: str, action: str
    ) -> None:
        await scaling.record_event(
            api=self._api,
            target=target,
            uid=uid,
            type="Warning" if type == "Warning" else "Normal",
            reason=reason,
            message=message,
            action=action,
            reporting_instance=self._identity,
        )


def run_controller(cfg: settings.ControllerSettings) -> int:
    obs_logging.configure(log_format=cfg.log_format, level="info")
    return asyncio.run(_controller(cfg))


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _controller(cfg: settings.ControllerSettings) -> int:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    api = await kube_client.connect(kubeconfig=str(cfg.kube.kubeconfig) if cfg.kube.kubeconfig else None)
    pool = kafka_pool.ReaderPool(
        connections_file=cfg.connections,
        settings=offsets.ReaderSettings(request_timeout=min(2.0, max(cfg.interval * 0.8, 0.5))),
        registry=registry,
    )
    sources = cli_backlogs.SourceBacklogs(
        cfg.connections,
        registry=registry,
        settings=reading.ReaderSettings(request_timeout=min(2.0, max(cfg.interval * 0.8, 0.5))),
    )
    watch = targets.TargetWatch(api, namespaces=cfg.kube.namespaces or None)
    # Not waited for: without the Trigger resource (no CRD) it retries, and trigger targets hold.
    triggers = kube_eventing.trigger_cache(api, namespaces=cfg.kube.namespaces or None)
    elector: leases.LeaderElector | None = None
    loop = control_loop.ControlLoop(
        targets=watch,
        lag=KafkaLag(pool),
        scaler=KubeScaler(api, identity=cfg.identity),
        metrics=metrics,
        default_bootstrap=_default_bootstrap(cfg),
        sources=sources,
        triggers=triggers,
        interval=cfg.interval,
        is_leader=lambda: elector is None or elector.is_leader,
        cross_namespace_hosts=cfg.cross_namespace_hosts,
        connections={
            kind: frozenset(getattr(cfg.connections, kind)) for kind in ("kafka", "rabbitmq", "redis", "nats")
        },
    )

    def healthy() -> str | None:
        last = loop.last_tick_at
        if last is not None and asyncio.get_running_loop().time() - last > max(10 * cfg.interval, 30):
            return f"no tick for more than {max(10 * cfg.interval, 30):.0f}s"
        return None

    def ready() -> str | None:
        if not watch.synced.is_set():
            return "Deployments not listed yet"
        return None if loop.ticks else "no tick yet"

    runners = []
    tasks: list[asyncio.Task[None]] = []
    try:
        metrics_runner, metrics_port = await obs_http.serve(
            obs_http.build_app(registry=registry, healthy=healthy, ready=ready),
            host=cfg.metrics_host,
            port=cfg.metrics_port,
            flag="--metrics-port",
        )
        runners.append(metrics_runner)
        log.info("listening", endpoint="metrics", port=metrics_port)
        report_runner, report_port = await obs_http.serve(
            reports.build_app(
                token=cfg.report_token,
                on_report=loop.report,
                is_leader=lambda: elector is None or elector.is_leader,
            ),
            host=cfg.metrics_host,
            port=cfg.report_port,
            flag="--report-port",
        )
        runners.append(report_runner)
        log.info("listening", endpoint="reports", port=report_port)
        if cfg.report_token is None:
            log.warning(
                ControlLog.REPORT_INSECURE, port=report_port, hint="anyone reaching it can scale targets"
            )
        report_url = published_report_url(
            cfg.report_url, pod_ip=os.environ.get("POD_IP", "127.0.0.1"), port=report_port
        )
        if cfg.leader_election:
            elector = leases.LeaderElector(
                api,
                cfg.lease_namespace,
                cfg.lease_name,
                cfg.identity,
                lease_duration=cfg.lease_duration,
                renew_deadline=cfg.renew_deadline,
                retry_period=cfg.retry_period,
                annotations={REPORT_URL_ANNOTATION: report_url},
                on_started_leading=lambda: _leadership(metrics, cfg.identity, leading=True),
                on_stopped_leading=lambda: _leadership(metrics, cfg.identity, leading=False),
            )
            tasks.append(asyncio.create_task(elector.run(), name="leader election"))
        else:
            metrics.leader.set(1)
        tasks.append(asyncio.create_task(watch.run(), name="deployment watch"))
        tasks.append(asyncio.create_task(triggers.run(), name="trigger watch"))
        log.info(
            "controller started",
            identity=cfg.identity,
            interval=cfg.interval,
            namespaces=list(cfg.kube.namespaces) or "all",
            kafka_connections={name: c.security_protocol for name, c in cfg.connections.kafka.items()},
            leader_election=cfg.leader_election,
            report_url=report_url,
        )
        await asyncio.wait_for(watch.synced.wait(), timeout=120)
        tasks.append(asyncio.create_task(loop.run(), name="control loop"))
        stop = asyncio.create_task(_until_signalled(), name="signals")
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("stopping: finishing in-flight patches")
        stop.cancel()
        return 0
    finally:
        # The loop first (it drains its patches), then the watch and the Lease (released for a standby).
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in runners:
            await runner.cleanup()
        await pool.close()
        await sources.close()
        await api.close()
        log.info("controller stopped")


def _default_bootstrap(cfg: settings.ControllerSettings) -> str | None:
    """The ``default`` Kafka connection's brokers (from the connections file or --kafka-bootstrap)."""
    default = cfg.connections.kafka.get("default")
    return None if default is None else default.bootstrap_servers


def published_report_url(configured: str | None, *, pod_ip: str, port: int) -> str:
    """The URL the leader writes on its Lease: the report endpoint itself, where activators POST.

    Default ``http://<pod ip>:<report port>/v1/reports``; a configured URL without a path gets the
    endpoint's path, a configured URL with a path is used as it is.
    """
    if configured is None:
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
        return f"http://{host}:{port}{REPORT_PATH}"
    parts = urllib.parse.urlsplit(configured)
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path=REPORT_PATH))
    return configured


def _leadership(metrics: ControllerMetrics, identity: str, *, leading: bool) -> None:
    metrics.leader.set(1 if leading else 0)
    log.info("leadership", identity=identity, leading=leading)
