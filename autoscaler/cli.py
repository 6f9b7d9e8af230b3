"""``queue-autoscaler``: argument parsing and wiring only.

Subcommands: ``run`` (the controller), ``activator`` (the HTTP buffer/proxy), ``decide`` (the controller's
decision on one JSON document, explained) and ``lag`` (a consumer group's lag, like Kafka's own tool).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry

from autoscaler import errors, settings
from autoscaler.activator import endpoints, proxy, routing, server
from autoscaler.control import loop as control_loop
from autoscaler.control import reports
from autoscaler.kube import client as kube_client
from autoscaler.kube import endpointslices, leases, scaling, targets
from autoscaler.model import TargetKey
from autoscaler.observability import http as obs_http
from autoscaler.observability import logging as obs_logging
from autoscaler.observability.metrics import ControllerMetrics
from autoscaler.policy import decide as policy_decide
from autoscaler.sources.kafka import offsets, table

log = structlog.get_logger("autoscaler")
REPORT_URL_ANNOTATION = "queue-autoscaler.dev/report-url"
REPORT_PATH = "/v1/reports"  # where control/reports.py serves the activators' reports

EXIT_INVALID = 2

DECIDE_HELP = """\
Reads one JSON object on stdin and writes the decision on stdout; it is the function the controller runs.

  in:  {"annotations": {"kafka-group": "g", "lag-per-replica": "100"}, "current_replicas": 3,
        "partitions": [{"topic": "t", "partition": 0, "committed": 120, "end": 150, "start": 0}],
        "now": "2026-11-26T12:00:00Z", "state": {...}}
  out: {"desired_replicas": 1, "total_lag": 30, "active": true, "reason": "...", "rule": "...",
        "state": {...}}

Annotation keys may be given with or without the queue-autoscaler.dev/ prefix. committed/end may be null
(no committed offset / partition absent from the end offsets); "partitions" null means the lag could
not be read. "now" defaults to the current time; "state" is the previous answer's state, to chain decisions.
Invalid annotations: exit status 2 and every bad key with its value on stderr.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="queue-autoscaler",
        description="Scale Kubernetes worker Deployments on queue depth (Kafka consumer-group lag and "
        "requests held by the activator), to and from zero. Every flag also reads QUEUE_AUTOSCALER_<FLAG>.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the controller",
        description="Watch annotated Deployments, read their lag every tick in batched requests, "
        "decide and patch their scale subresource.",
    )
    settings.add_controller_flags(run)
    activator = sub.add_parser(
        "activator",
        help="run the activator (HTTP/CloudEvents buffer and proxy)",
        description="Route requests by Host to annotated Deployments, hold them while the target has no "
        "ready endpoint, wake it at once, forward when a pod is ready.",
    )
    settings.add_activator_flags(activator)
    sub.add_parser(
        "decide",
        help="explain one decision: JSON document on stdin, decision on stdout",
        description=DECIDE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lag = sub.add_parser(
        "lag",
        help="show a consumer group's lag per partition, like kafka-consumer-groups --describe",
        description="Read one consumer group's committed offsets and its partitions' end and start offsets "
        "with the same batched reads the controller uses.",
    )
    lag.add_argument("--group", required=True, help="consumer group")
    lag.add_argument(
        "--topic", action="append", default=[], help="topic (repeatable); default: every committed topic"
    )
    lag.add_argument(
        "--bootstrap",
        default=settings.env_default("--kafka-bootstrap", None),
        help="bootstrap servers (default $QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP)",
    )
    lag.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def cmd_decide() -> int:
    try:
        document = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        print(f"decide: stdin is not JSON: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        answer = policy_decide.decide_document(document, datetime.now(UTC))
    except errors.PolicyError as exc:
        print("decide: invalid annotations:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    except ValueError as exc:
        print(f"decide: {exc}", file=sys.stderr)
        return EXIT_INVALID
    json.dump(answer, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


async def cmd_lag(args: argparse.Namespace) -> int:
    if not args.bootstrap:
        raise errors.SettingsError("--bootstrap: required (or set QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP)")
    query = offsets.GroupQuery(args.group, tuple(args.topic) or None)
    async with offsets.OffsetReader(args.bootstrap) as reader:
        outcome = (await reader.read(queries=[query]))[query]
    if isinstance(outcome, errors.KafkaError):
        raise outcome
    if args.json:
        rows = [
            {
                "topic": r.topic,
                "partition": r.partition,
                "committed": r.committed,
                "end": r.end,
                "start": r.start,
                "lag": table.tool_lag(r),
            }
            for r in sorted(outcome, key=lambda r: (r.topic, r.partition))
        ]
        known = [row["lag"] for row in rows if isinstance(row["lag"], int)]
        json.dump({"group": args.group, "partitions": rows, "total_lag": sum(known)}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"GROUP {args.group}")
        print(table.format_lag_table(outcome))
    return 0


class KafkaLag:
    """control_loop.LagSource over the pool of batched offset readers."""

    def __init__(self, pool: offsets.ReaderPool) -> None:
        self._pool = pool

    async def read(
        self, *, bootstrap: str, groups: Sequence[control_loop.GroupRead]
    ) -> Mapping[control_loop.GroupRead, control_loop.GroupResult]:
        queries = {g: offsets.GroupQuery(g.group, g.topics or None) for g in groups}
        answer = await self._pool.read(bootstrap=bootstrap, queries=list(queries.values()))
        return {g: answer[q] for g, q in queries.items()}


class KubeScaler:
    """control_loop.Scaler over the scale subresource, the last-active annotation and events.k8s.io."""

    def __init__(self, api: object, *, identity: str) -> None:
        self._api = api
        self._identity = identity

    async def scale(self, *, target: TargetKey, replicas: int) -> int:
        return await scaling.patch_replicas(api=self._api, target=target, replicas=replicas)

    async def set_last_active(self, *, target: TargetKey, when: datetime | None) -> None:
        await scaling.write_last_active(api=self._api, target=target, when=when)

    async def event(
        self, *, target: TargetKey, uid: str, type: str, reason: str, message: str, action: str
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
    pool = offsets.ReaderPool(
        settings=offsets.ReaderSettings(request_timeout=min(2.0, max(cfg.interval * 0.8, 0.5))),
        registry=registry,
    )
    watch = targets.TargetWatch(api, namespaces=cfg.kube.namespaces or None)
    elector: leases.LeaderElector | None = None
    loop = control_loop.ControlLoop(
        targets=watch,
        lag=KafkaLag(pool),
        scaler=KubeScaler(api, identity=cfg.identity),
        metrics=metrics,
        default_bootstrap=cfg.kafka_bootstrap,
        interval=cfg.interval,
        is_leader=lambda: elector is None or elector.is_leader,
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
        )
        runners.append(report_runner)
        log.info("listening", endpoint="reports", port=report_port)
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
        log.info(
            "controller started",
            identity=cfg.identity,
            interval=cfg.interval,
            namespaces=list(cfg.kube.namespaces) or "all",
            kafka_bootstrap=cfg.kafka_bootstrap,
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
        await api.close()
        log.info("controller stopped")


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


class LeaderURL:
    """The report URL the controller leader publishes on its Lease, refreshed in the background."""

    def __init__(self, api: object, *, namespace: str, name: str, every: float) -> None:
        self._api, self._namespace, self._name, self._every = api, namespace, name, every
        self.url: str | None = None

    def __call__(self) -> str | None:
        return self.url

    async def run(self) -> None:
        while True:
            try:
                holder, notes = await leases.read_leader(
                    api=self._api, namespace=self._namespace, name=self._name
                )
                url = notes.get(REPORT_URL_ANNOTATION) if holder else None
            except errors.KubeError as exc:
                log.warning("cannot read the controller lease", error=str(exc))
                url = self.url
            if url != self.url:
                log.info("controller leader", url=url)
                self.url = url
            await asyncio.sleep(self._every)


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
        lookup = LeaderURL(api, namespace=cfg.lease_namespace, name=cfg.lease_name, every=cfg.report_interval)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    one_shot = args.command in ("decide", "lag")
    obs_logging.configure(log_format="console" if one_shot else "auto", level="warning")
    if one_shot:  # the command's own message says what failed; the libraries' retries are noise here
        logging.getLogger().setLevel(logging.CRITICAL)
    try:
        if args.command == "decide":
            return cmd_decide()
        if args.command == "lag":
            return asyncio.run(cmd_lag(args))
        if args.command == "run":
            return run_controller(settings.controller_settings(args))
        return run_activator(settings.activator_settings(args))
    except errors.SettingsError as exc:
        print(f"queue-autoscaler {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except errors.AutoscalerError as exc:  # Kafka or Kubernetes unreachable or refusing at start-up
        print(f"queue-autoscaler {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
