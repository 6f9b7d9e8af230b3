"""The broker ingress: ``POST /<namespace>/<broker>`` writes one CloudEvent to the Broker's Kafka topic.

Answers (Knative's Kafka broker ingress, see the reference notes): 202 once Kafka acknowledged the record
with acks=all; 400 for anything that is not a valid CloudEvent, with the reason; 404 for a path that is not
a known Broker of class queue-autoscaler; 405 for any other method (OPTIONS included, as the Kafka broker
does), with ``Allow: POST``; 413 for a body over ``max_body_bytes`` (Knative has none: its producer refuses
records over 1 MiB); 503 when Kafka is unavailable or ``max_in_flight`` produces are already waiting
(with Retry-After), so nothing is accepted that is not stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from autoscaler import model
from autoscaler.errors import KafkaError
from autoscaler.eventing import events
from autoscaler.observability.log_events import EventingLog

log = structlog.get_logger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Brokers(Protocol):
    """Which Brokers exist: the topic of a Broker of our class, or None."""

    def topic(self, namespace: str, name: str) -> str | None: ...


class Sink(Protocol):
    """Where accepted events go: returns once stored (acks=all); raises KafkaError otherwise."""

    async def send(self, *, topic: str, record: events.Record) -> None: ...


class Topics(Protocol):
    async def ensure(self, topic: str) -> None: ...


@dataclass(frozen=True, slots=True)
class IngressSettings:
    max_body_bytes: int = 1024 * 1024
    max_in_flight: int = 1000


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("namespace", "broker")
        self.accepted = Counter(
            "queue_autoscaler_broker_events_accepted",
            "Events written to the Broker's topic and acknowledged by Kafka.",
            labels,
            registry=registry,
        )
        self.rejected = Counter(
            "queue_autoscaler_broker_events_rejected",
            "Requests refused by reason: invalid, unknown-broker, method, too-large, kafka-unavailable, busy",
            (*labels, "reason"),
            registry=registry,
        )
        self.produce_seconds = Histogram(
            "queue_autoscaler_broker_produce_seconds",
            "Time from a valid event to Kafka's acknowledgement.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


class Ingress:
    def __init__(
        self,
        *,
        brokers: Brokers,
        sink: Sink,
        topics: Topics,
        metrics: IngressMetrics,
        settings: IngressSettings,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._brokers = brokers
        self._sink = sink
        self._topics = topics
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.max_in_flight)

    def build_app(self) -> web.Application:
        # aiohttp's own limit refuses bigger bodies with 413 even when Content-Length is absent.
        app = web.Application(client_max_size=self._settings.max_body_bytes)
        app.router.add_route("*", "/{namespace}/{broker}", self.handle)
        app.router.add_route("*", "/{tail:.*}", self.unknown)
        return app

    def _reject(
        self, status: int, reason: str, text: str, namespace: str = "", broker: str = ""
    ) -> web.Response:
        self._metrics.rejected.labels(namespace, broker, reason).inc()
        headers = {"Allow": "POST"} if status == 405 else {}
        if status == 503:
            headers["Retry-After"] = "1"
        return web.Response(status=status, text=text + "\n", headers=headers)

    async def unknown(self, request: web.Request) -> web.Response:
        return self._reject(
            404, "unknown-broker", f"no broker at {request.path}: POST to /<namespace>/<broker>"
        )

    async def handle(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["broker"]
        topic = self._brokers.topic(namespace, name)
        if topic is None:
            return self._reject(
                404, "unknown-broker", f"no Broker {name!r} of class queue-autoscaler in {namespace!r}"
            )
        if request.method != "POST":
            return self._reject(
                405, "method", f"{request.method} is not allowed: POST one CloudEvent", namespace, name
            )
        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._too_large(namespace, name)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(namespace, name)
        try:
            record = events.from_http(request.headers, body)
        except events.InvalidEvent as exc:
            return self._reject(400, "invalid", str(exc), namespace, name)
        if self._slots.locked():
            return self._reject(503, "busy", "too many events in flight to Kafka: retry", namespace, name)
        async with self._slots:
            started = self._clock()
            try:
                await self._topics.ensure(topic)
                await self._sink.send(topic=topic, record=record)
            except KafkaError as exc:
                log.warning(
                    EventingLog.INGRESS_PRODUCE_FAILED, namespace=namespace, broker=name, error=str(exc)
                )
                return self._reject(
                    503, "kafka-unavailable", f"the event was not stored: {exc}", namespace, name
                )
            self._metrics.produce_seconds.labels(namespace, name).observe(self._clock() - started)
        self._metrics.accepted.labels(namespace, name).inc()
        return web.Response(status=202)

    def _too_large(self, namespace: str, name: str) -> web.Response:
        limit = self._settings.max_body_bytes
        return self._reject(413, "too-large", f"the event is larger than {limit} bytes", namespace, name)


def default_topic(namespace: str, name: str) -> str:
    return model.broker_topic(namespace, name)
