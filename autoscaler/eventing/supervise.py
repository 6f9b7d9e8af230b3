"""The dispatcher's control loop: on every change of Brokers or Triggers (and every ``resync`` seconds),
create the topics of our Brokers, write their status, resolve each Trigger's subscriber and dead-letter
sink, write its status, and run exactly one ``TriggerDelivery`` for each Ready Trigger (restarted when its
spec or resolved URLs change, stopped when it goes away or stops being Ready).

Every dispatcher replica does all of this: the Trigger's consumer group shares its partitions over the
replicas' deliveries, and each replica writes a status only when it differs from the one it last wrote (or,
before its first write, from the stored one), so replicas that see the same objects write it once between
them and replicas that disagree (one cannot reach Kafka) write once each instead of flipping it back and
forth.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog

from autoscaler import model
from autoscaler.errors import KafkaError, KubeError, TargetGone, TriggerError
from autoscaler.eventing import delivery, dispatcher, filters, reconcile
from autoscaler.kube import eventing as kube_eventing
from autoscaler.observability.log_events import EventingLog

log = structlog.get_logger(__name__)


class Topics(Protocol):
    async def ensure(self, topic: str) -> None: ...


ConsumerFactory = Callable[[filters.Trigger], dispatcher.Consumer]


@dataclass(frozen=True, slots=True)
class SuperviseSettings:
    ingress_url: str
    cluster_domain: str = "cluster.local"
    max_in_flight: int = 100
    resync: float = 10.0
    activator_url: str | None = None  # deliveries to cluster Services go through it
    revoke_grace: float = 5.0  # seconds for deliveries on a partition moving to another replica


class KubeObjects:
    """``reconcile.Objects`` on the API server."""

    def __init__(self, api: object) -> None:
        self._api = api

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        try:
            return await kube_eventing.get_object(
                self._api, api_version=api_version, kind=kind, namespace=namespace, name=name
            )
        except TargetGone as exc:
            raise reconcile.NotServed(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class _Running:
    trigger: filters.Trigger
    target: dispatcher.Target
    task: asyncio.Task[None]


class Supervisor:
    def __init__(
        self,
        *,
        api: object,
        brokers: kube_eventing.Cache,
        triggers: kube_eventing.Cache,
        topics: Topics,
        consumers: ConsumerFactory,
        session: aiohttp.ClientSession,
        metrics: dispatcher.DispatcherMetrics,
        settings: SuperviseSettings,
    ) -> None:
        self._api = api
        self._brokers = brokers
        self._triggers = triggers
        self._topics = topics
        self._consumers = consumers
        self._session = session
        self._metrics = metrics
        self._settings = settings
        self._objects = KubeObjects(api)
        self._running: dict[tuple[str, str], _Running] = {}
        self._written: dict[tuple[str, str, str], dict[str, Any]] = {}

    @property
    def delivering(self) -> set[tuple[str, str]]:
        """The Triggers (namespace, name) with a running delivery."""
        return {key for key, running in self._running.items() if not running.task.done()}

    async def run(self) -> None:
        await asyncio.gather(self._brokers.synced.wait(), self._triggers.synced.wait())
        try:
            while True:
                self._brokers.changed.clear()
                self._triggers.changed.clear()
                await self.reconcile_once()
                waits = [asyncio.create_task(c.changed.wait()) for c in (self._brokers, self._triggers)]
                try:
                    await asyncio.wait(
                        waits, timeout=self._settings.resync, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for wait in waits:
                        wait.cancel()
                    await asyncio.gather(*waits, return_exceptions=True)
        finally:
            for key in list(self._running):
                await self._stop(key)

    async def reconcile_once(self) -> None:
        ready_brokers = {}
        for broker in self._brokers.all():
            if broker.ours:
                ready_brokers[(broker.namespace, broker.name)] = await self._broker(broker)
        wanted: dict[tuple[str, str], tuple[filters.Trigger, dispatcher.Target]] = {}
        for resource in self._triggers.all():
            found = await self._trigger(resource, ready_brokers)
            if found is not None:
                wanted[(resource.namespace, resource.name)] = found
        for key, running in list(self._running.items()):
            if key not in wanted or wanted[key] != (running.trigger, running.target) or running.task.done():
                await self._stop(key)
        for key, (trigger, target) in wanted.items():
            if key not in self._running:
                self._start(trigger, target)

    async def _broker(self, broker: kube_eventing.Resource) -> bool:
        topic = model.broker_topic(broker.namespace, broker.name)
        url = f"{self._settings.ingress_url}/{broker.namespace}/{broker.name}"
        try:
            await self._topics.ensure(topic)
            topic_ready = reconcile.condition("TopicReady", True, "TopicCreated", f"topic {topic}")
        except KafkaError as exc:
            topic_ready = reconcile.condition("TopicReady", False, "TopicNotCreated", str(exc))
        conditions = reconcile.with_ready([reconcile.condition("Addressable", True), topic_ready])
        await self._write(
            "brokers",
            broker,
            conditions,
            address={"name": "http", "url": url},
            annotations={"default.topic": topic},
        )
        return topic_ready["status"] == "True"

    async def _trigger(
        self, resource: kube_eventing.Resource, brokers: Mapping[tuple[str, str], bool]
    ) -> tuple[filters.Trigger, dispatcher.Target] | None:
        broker_name = (resource.manifest.get("spec") or {}).get("broker")
        if (resource.namespace, broker_name) not in brokers and self._brokers.get(
            resource.namespace, str(broker_name)
        ):
            return None  # a Trigger of another broker class: not ours to touch
        try:
            trigger = filters.parse_trigger(self._with_broker_delivery(resource, str(broker_name)))
        except TriggerError as exc:
            conditions = reconcile.with_ready(
                [reconcile.condition("BrokerReady", False, "InvalidTrigger", str(exc))]
            )
            await self._write("triggers", resource, conditions)
            return None
        conditions = []
        broker_ready = brokers.get((trigger.namespace, trigger.broker))
        if broker_ready is None:
            conditions.append(
                reconcile.condition(
                    "BrokerReady",
                    False,
                    "BrokerDoesNotExist",
                    f"no Broker {trigger.broker!r} of class queue-autoscaler in {trigger.namespace!r}",
                )
            )
        else:
            conditions.append(
                reconcile.condition("BrokerReady", broker_ready, "" if broker_ready else "BrokerNotReady")
            )
        subscriber = await self._resolve(trigger.subscriber)
        conditions.append(_resolved("SubscriberResolved", subscriber))
        sink: reconcile.Resolved | reconcile.Unresolved | None = None
        if trigger.delivery.dead_letter_sink is not None:
            sink = await self._resolve(trigger.delivery.dead_letter_sink)
            conditions.append(_resolved("DeadLetterSinkResolved", sink))
        else:
            conditions.append(
                reconcile.condition("DeadLetterSinkResolved", True, "DeadLetterSinkNotConfigured")
            )
        unsupported = trigger.unsupported
        ok = all(c["status"] == "True" for c in conditions) and unsupported is None
        if unsupported is not None:
            conditions.append(
                reconcile.condition("SubscriptionReady", False, "FilterNotSupported", unsupported)
            )
        elif not ok:
            conditions.append(
                reconcile.condition("SubscriptionReady", False, "NotDelivering", "see the other conditions")
            )
        else:
            conditions.append(
                reconcile.condition("SubscriptionReady", True, "ConsumerGroupRunning", trigger.consumer_group)
            )
        fields: dict[str, Any] = {"annotations": {"group.id": trigger.consumer_group}}
        if isinstance(subscriber, reconcile.Resolved):
            fields["subscriberUri"] = subscriber.url
        if isinstance(sink, reconcile.Resolved):
            fields["deadLetterSinkUri"] = sink.url
        await self._write("triggers", resource, reconcile.with_ready(conditions), **fields)
        if not ok or not isinstance(subscriber, reconcile.Resolved):
            return None
        target = dispatcher.Target(
            subscriber=subscriber.url,
            dead_letter_sink=sink.url if isinstance(sink, reconcile.Resolved) else None,
            reply_url=f"{self._settings.ingress_url}/{trigger.namespace}/{trigger.broker}",
            via=self._via(subscriber.url),
        )
        return trigger, target

    def _with_broker_delivery(self, resource: kube_eventing.Resource, broker_name: str) -> dict[str, Any]:
        """The Trigger's manifest, its ``spec.delivery`` completed by its Broker's (the Broker's delivery
        is the default of every Trigger on it)."""
        manifest = dict(resource.manifest)
        broker = self._brokers.get(resource.namespace, broker_name)
        spec = manifest.get("spec")
        if broker is None or not isinstance(spec, Mapping):
            return manifest
        broker_delivery = (broker.manifest.get("spec") or {}).get("delivery")
        merged = delivery.inherited(spec.get("delivery"), broker_delivery)
        if merged is not None:
            manifest["spec"] = {**spec, "delivery": merged}
        return manifest

    def _via(self, url: str) -> str | None:
        host = urllib.parse.urlsplit(url).hostname or ""
        if self._settings.activator_url and host.endswith(f".svc.{self._settings.cluster_domain}"):
            return self._settings.activator_url
        return None

    async def _resolve(self, destination: delivery.Destination) -> reconcile.Resolved | reconcile.Unresolved:
        try:
            return await reconcile.resolve(
                destination, objects=self._objects, domain=self._settings.cluster_domain
            )
        except KubeError as exc:
            return reconcile.Unresolved("ResolveFailed", str(exc))

    async def _write(
        self,
        plural: str,
        resource: kube_eventing.Resource,
        conditions: list[reconcile.Condition],
        **fields: Any,
    ) -> None:
        key = (plural, resource.namespace, resource.name)
        previous = self._written.get(key) or resource.manifest.get("status")
        wanted = reconcile.status(conditions, previous=previous, generation=resource.generation, **fields)
        if reconcile.same_status(previous, wanted):
            return
        try:
            await kube_eventing.patch_status(
                self._api, plural=plural, namespace=resource.namespace, name=resource.name, status=wanted
            )
        except KubeError as exc:
            log.warning(
                EventingLog.STATUS_FAILED,
                kind=plural,
                namespace=resource.namespace,
                name=resource.name,
                error=str(exc),
            )
            return
        self._written[key] = wanted
        ready = next(c for c in conditions if c["type"] == "Ready")
        log.info(
            EventingLog.STATUS_WRITTEN,
            kind=plural,
            namespace=resource.namespace,
            name=resource.name,
            ready=ready["status"],
            reason=ready.get("reason"),
        )

    def _start(self, trigger: filters.Trigger, target: dispatcher.Target) -> None:
        runner = dispatcher.TriggerDelivery(
            trigger=trigger,
            target=target,
            consumer=self._consumers(trigger),
            session=self._session,
            metrics=self._metrics,
            max_in_flight=self._settings.max_in_flight,
            revoke_grace=self._settings.revoke_grace,
        )
        task = asyncio.create_task(runner.run(), name=f"trigger {trigger.namespace}/{trigger.name}")
        self._running[(trigger.namespace, trigger.name)] = _Running(trigger, target, task)

    async def _stop(self, key: tuple[str, str]) -> None:
        running = self._running.pop(key)
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task


def _resolved(kind: str, found: reconcile.Resolved | reconcile.Unresolved) -> reconcile.Condition:
    if isinstance(found, reconcile.Resolved):
        return reconcile.condition(kind, True, "Resolved", found.url)
    return reconcile.condition(kind, False, found.reason, found.message)
