"""The event broker's commands: ``match`` (one Trigger, one event, explained), ``broker-ingress`` and
``dispatcher``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler import errors, model
from autoscaler.eventing import dispatcher, filters, ingress, supervise
from autoscaler.eventing import kafka as eventing_kafka
from autoscaler.kube import client as kube_client
from autoscaler.kube import eventing as kube_eventing
from autoscaler.observability import http as obs_http
from autoscaler.observability import logging as obs_logging
from autoscaler.observability.log_events import EventingLog
from autoscaler.settings import eventing as eventing_settings

log = structlog.get_logger("autoscaler")

EXIT_INVALID = 2


def cmd_match() -> int:
    try:
        document = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        print(f"match: stdin is not JSON: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not isinstance(document, dict) or "trigger" not in document or "event" not in document:
        print('match: stdin must be {"trigger": {...}, "event": {...}}', file=sys.stderr)
        return EXIT_INVALID
    try:
        trigger = filters.parse_trigger(document["trigger"])
    except errors.TriggerError as exc:
        print("match: invalid Trigger:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    try:
        attributes = filters.event_attributes(document["event"])
    except ValueError as exc:
        print(f"match: {exc}", file=sys.stderr)
        return EXIT_INVALID
    verdict = filters.match(trigger, attributes)
    json.dump({"matches": verdict.matches, "reason": verdict.reason}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


# --- broker-ingress ---------------------------------------------------------------------------------------


class BrokerTopics:
    """The ingress's view of the Brokers: the topic of each Broker of class queue-autoscaler."""

    def __init__(self, brokers: kube_eventing.Cache) -> None:
        self._brokers = brokers

    def topic(self, namespace: str, name: str) -> str | None:
        found = self._brokers.get(namespace, name)
        if found is None or not found.ours:
            return None
        return model.broker_topic(namespace, name)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    addresses = runner.addresses
    return int(addresses[0][1]) if addresses else configured


def run_broker_ingress(cfg: eventing_settings.BrokerIngressSettings) -> int:
    obs_logging.configure(log_format=cfg.log_format, level="info")
    return asyncio.run(_broker_ingress(cfg))


async def _broker_ingress(cfg: eventing_settings.BrokerIngressSettings) -> int:
    registry = CollectorRegistry()
    api = await kube_client.connect(kubeconfig=str(cfg.kube.kubeconfig) if cfg.kube.kubeconfig else None)
    brokers = kube_eventing.cache(api, plural="brokers", namespaces=cfg.kube.namespaces or None)
    kafka_settings = eventing_kafka.KafkaSettings(cfg.kafka_bootstrap)
    producer = eventing_kafka.Producer(kafka_settings)
    front = ingress.Ingress(
        brokers=BrokerTopics(brokers),
        sink=producer,
        topics=eventing_kafka.Topics(kafka_settings, partitions=cfg.partitions),
        metrics=ingress.IngressMetrics(registry),
        settings=ingress.IngressSettings(max_body_bytes=cfg.max_body_bytes, max_in_flight=cfg.max_in_flight),
    )
    watching = asyncio.create_task(brokers.run(), name="broker watch")
    runners: list[web.AppRunner] = []
    try:
        stop = _stop_event()
        await asyncio.wait_for(brokers.synced.wait(), timeout=120)
        admin = obs_http.build_app(registry=registry, healthy=lambda: None, ready=lambda: None)
        admin_runner, admin_port = await obs_http.serve(admin, host=cfg.listen_host, port=cfg.metrics_port)
        runners.append(admin_runner)
        runner = web.AppRunner(front.build_app(), access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, cfg.listen_host, cfg.port).start()
        log.info(EventingLog.INGRESS_LISTENING, port=_bound_port(runner, cfg.port), metrics_port=admin_port)
        await stop.wait()
        return 0
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        for one in reversed(runners):
            await one.cleanup()
        await producer.close()
        await api.close()


# --- dispatcher -------------------------------------------------------------------------------------------


def run_dispatcher(cfg: eventing_settings.DispatcherSettings) -> int:
    obs_logging.configure(log_format=cfg.log_format, level="info")
    return asyncio.run(_dispatcher(cfg))


async def _dispatcher(cfg: eventing_settings.DispatcherSettings) -> int:
    registry = CollectorRegistry()
    api = await kube_client.connect(kubeconfig=str(cfg.kube.kubeconfig) if cfg.kube.kubeconfig else None)
    namespaces = cfg.kube.namespaces or None
    brokers = kube_eventing.cache(api, plural="brokers", namespaces=namespaces)
    triggers = kube_eventing.cache(api, plural="triggers", namespaces=namespaces)
    kafka_settings = eventing_kafka.KafkaSettings(cfg.kafka_bootstrap)

    def consumer(trigger: filters.Trigger) -> eventing_kafka.GroupConsumer:
        return eventing_kafka.GroupConsumer(
            kafka_settings,
            topic=model.broker_topic(trigger.namespace, trigger.broker),
            group=trigger.consumer_group,
            max_records=cfg.max_in_flight,
        )

    tasks: list[asyncio.Task[None]] = []
    runners: list[web.AppRunner] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        boss = supervise.Supervisor(
            api=api,
            brokers=brokers,
            triggers=triggers,
            topics=eventing_kafka.Topics(kafka_settings, partitions=cfg.partitions),
            consumers=consumer,
            session=session,
            metrics=dispatcher.DispatcherMetrics(registry),
            settings=supervise.SuperviseSettings(
                ingress_url=cfg.ingress_url,
                cluster_domain=cfg.cluster_domain,
                max_in_flight=cfg.max_in_flight,
                activator_url=cfg.activator_url,
                revoke_grace=cfg.revoke_grace,
            ),
        )
        try:
            stop = _stop_event()
            tasks += [
                asyncio.create_task(brokers.run(), name="broker watch"),
                asyncio.create_task(triggers.run(), name="trigger watch"),
                asyncio.create_task(boss.run(), name="supervisor"),
            ]
            admin = obs_http.build_app(registry=registry, healthy=lambda: None, ready=lambda: None)
            admin_runner, admin_port = await obs_http.serve(admin, host="0.0.0.0", port=cfg.metrics_port)
            runners.append(admin_runner)
            log.info(EventingLog.DISPATCHER_STARTED, metrics_port=admin_port)
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            for task in done:
                if task is not stopped and not task.cancelled() and (error := task.exception()) is not None:
                    raise error
            return 0
        finally:
            for task in reversed(tasks):
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            for one in runners:
                await one.cleanup()
            await api.close()
