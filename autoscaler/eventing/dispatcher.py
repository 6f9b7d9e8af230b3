"""The dispatcher: one consumer group per Trigger, its matching events delivered to its subscriber.

Per Trigger (``TriggerDelivery``): records are fetched from the Broker's topic by the consumer group
``knative-trigger-<namespace>-<name>``; each is filtered (``filters``), delivered in binary mode with
``Prefer: reply``, retried per ``delivery`` (``delivery.schedule``), then dead-lettered with the
``knativeerror*`` extensions; a reply (2xx with an event) goes back through the broker ingress with
``knativebrokerttl`` decremented, and is dropped when that reaches 0 (the loop guard). ``ordered``
delivers one record per partition at a time (the next waits for retries and dead-lettering, as the Kafka
broker does); ``unordered`` delivers up to ``max_in_flight`` at once. Either way at most ``max_in_flight``
records are held, so a Trigger with a big backlog or a slow subscriber never holds unbounded memory, and
each Trigger has its own consumer, tasks and bound: a slow Trigger never stalls another.

Offsets are committed every ``commit_interval`` and on stop, only below records that finished
(``delivery.Progress``). A record whose dead-letter send keeps failing never finishes: it is retried
until the sink answers, and nothing at or above it is committed.

Every dispatcher replica runs every Ready Trigger; Kafka's group assignment shares each Trigger's
partitions over them. When partitions are revoked, their deliveries in flight get ``revoke_grace``
seconds to finish, what finished below them is committed, and their progress is forgotten: a delivery
still running after that can neither commit nor fail, and its record is delivered again by the new owner
(at least once). A replica holding no partition is a normal member: it fetches nothing and waits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from autoscaler.errors import KafkaError
from autoscaler.eventing import delivery, events, filters
from autoscaler.observability.log_events import EventingLog

log = structlog.get_logger(__name__)

ERROR_DATA_LIMIT = 1024  # bytes of the failed response body kept in knativeerrordata (as Knative)


class Rebalance(Protocol):
    """Hears of the Trigger's partitions changing hands between dispatcher replicas (Kafka's group
    assignment): ``revoked`` before partitions go to another member, ``assigned`` with the new set."""

    async def revoked(self, partitions: set[int]) -> None: ...
    async def assigned(self, partitions: set[int]) -> None: ...


class Consumer(Protocol):
    async def start(self, rebalance: Rebalance) -> None: ...
    async def fetch(self, timeout: float) -> Sequence[object]: ...
    async def commit(self, offsets: dict[int, int]) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Target:
    """Where one Trigger's events go: resolved URLs (the dead-letter sink may be absent)."""

    subscriber: str
    dead_letter_sink: str | None
    reply_url: str  # the broker ingress URL of the Trigger's Broker
    via: str | None = None  # the activator, for cluster Service URLs: it holds deliveries while they wake

    def address(self, url: str) -> tuple[str, dict[str, str]]:
        """Where to send a request for ``url``: through ``via`` with ``url``'s host as Host, or ``url``."""
        if self.via is None or url != self.subscriber:
            return url, {}
        parts = urllib.parse.urlsplit(url)
        rest = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        return self.via.rstrip("/") + rest, {"Host": parts.netloc}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One HTTP exchange: status None for a network error or a timeout."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str = ""


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("namespace", "trigger")
        self.events = Counter(
            "queue_autoscaler_trigger_events",
            "Records a Trigger finished, by result: delivered, filtered, dead-lettered, dropped, invalid.",
            (*labels, "result"),
            registry=registry,
        )
        self.attempts = Counter(
            "queue_autoscaler_trigger_delivery_attempts",
            "Delivery attempts to subscribers, by HTTP status code ('' for network errors and timeouts).",
            (*labels, "code"),
            registry=registry,
        )
        self.latency = Histogram(
            "queue_autoscaler_trigger_delivery_seconds",
            "Time from fetching a matching record until it was delivered or dead-lettered.",
            labels,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.partitions = Gauge(
            "queue_autoscaler_dispatcher_partitions",
            "Partitions of the Trigger's broker topic this dispatcher replica holds.",
            labels,
            registry=registry,
        )


Sleep = Callable[[float], Awaitable[None]]


class TriggerDelivery:
    def __init__(
        self,
        *,
        trigger: filters.Trigger,
        target: Target,
        consumer: Consumer,
        session: aiohttp.ClientSession,
        metrics: DispatcherMetrics,
        max_in_flight: int,
        commit_interval: float = 1.0,
        revoke_grace: float = 5.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.trigger = trigger
        self.target = target
        self._consumer = consumer
        self._session = session
        self._metrics = metrics
        self._slots = asyncio.Semaphore(max_in_flight)
        self._commit_interval = commit_interval
        self._revoke_grace = revoke_grace
        self._sleep = sleep
        self._progress: dict[int, delivery.Progress] = {}
        self._committed: dict[int, int] = {}
        self._partition_tail: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._partition_tasks: dict[int, set[asyncio.Task[None]]] = {}
        # Bumped when a partition is revoked: records and deliveries of an older epoch no longer count.
        self._epochs: dict[int, int] = {}
        self._held: set[int] = set()
        self._log = log.bind(namespace=trigger.namespace, trigger=trigger.name)

    # --- the fetch loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        await self._consumer.start(self)
        self._log.info(
            EventingLog.TRIGGER_STARTED, group=self.trigger.consumer_group, ordered=self.trigger.ordered
        )
        committer = asyncio.create_task(self._commit_every())
        try:
            while True:
                try:
                    records = await self._consumer.fetch(0.5)
                except KafkaError as exc:
                    self._log.warning(EventingLog.TRIGGER_FAILED, error=str(exc))
                    await self._sleep(1.0)
                    continue
                epochs = dict(self._epochs)
                for record in records:
                    await self._slots.acquire()
                    if not self._start(record, epochs):
                        self._slots.release()  # its partition was revoked while it waited for a slot
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(KafkaError):
                await self._commit()
            await self._consumer.stop()
            with contextlib.suppress(KeyError):
                self._metrics.partitions.remove(self.trigger.namespace, self.trigger.name)
            self._log.info(EventingLog.TRIGGER_STOPPED)

    def _start(self, raw: object, epochs: dict[int, int]) -> bool:
        partition: int = getattr(raw, "partition")  # noqa: B009 - aiokafka's ConsumerRecord
        offset: int = getattr(raw, "offset")  # noqa: B009
        epoch = self._epochs.get(partition, 0)
        if epoch != epochs.get(partition, 0):
            return False
        progress = self._progress.get(partition, delivery.Progress())
        if progress.high is not None and offset < progress.high:
            # The partition was taken away and given back (a rebalance): its records come again from
            # the last commit; what is still in flight of the old run no longer counts.
            progress = delivery.Progress()
        self._progress[partition] = progress.fetched(offset)
        record = events.from_kafka(
            getattr(raw, "headers", ()) or (), getattr(raw, "key", None), getattr(raw, "value", None)
        )
        previous = self._partition_tail.get(partition) if self.trigger.ordered else None
        task = asyncio.create_task(
            self._handle(partition, offset, epoch, record, previous), name=f"delivery {partition}/{offset}"
        )
        self._tasks.add(task)
        in_partition = self._partition_tasks.setdefault(partition, set())
        in_partition.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(in_partition.discard)
        if self.trigger.ordered:
            self._partition_tail[partition] = task
        return True

    async def _handle(
        self,
        partition: int,
        offset: int,
        epoch: int,
        record: events.Record | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            result = await self._process(record)
            self._metrics.events.labels(self.trigger.namespace, self.trigger.name, result).inc()
            progress = self._progress.get(partition)
            if (
                self._epochs.get(partition, 0) == epoch
                and progress is not None
                and offset in progress.pending
            ):
                self._progress[partition] = progress.finished(offset)
        finally:
            self._slots.release()

    # --- partitions changing hands ----------------------------------------------------------------------

    async def revoked(self, partitions: set[int]) -> None:
        """Gives the partitions' deliveries in flight the grace to finish, commits what finished, and
        forgets the partitions (records fetched for them and not started yet are dropped)."""
        for partition in partitions:
            self._epochs[partition] = self._epochs.get(partition, 0) + 1
        running = [t for p in partitions for t in self._partition_tasks.get(p, ())]
        if running:
            await asyncio.wait(running, timeout=self._revoke_grace)
        late = sum(1 for t in running if not t.done())
        due = {
            p: offset
            for p in partitions
            if (progress := self._progress.get(p)) is not None
            and (offset := progress.committable) is not None
            and self._committed.get(p) != offset
        }
        try:
            await self._consumer.commit(due)
        except KafkaError as exc:
            self._log.warning(EventingLog.COMMIT_FAILED, error=str(exc), partitions=sorted(due))
        for partition in partitions:
            self._progress.pop(partition, None)
            self._committed.pop(partition, None)
        self._held -= partitions
        self._metrics.partitions.labels(self.trigger.namespace, self.trigger.name).set(len(self._held))
        self._log.info(
            EventingLog.PARTITIONS_REVOKED, partitions=sorted(partitions), committed=due, late=late
        )

    async def assigned(self, partitions: set[int]) -> None:
        self._held = set(partitions)
        self._metrics.partitions.labels(self.trigger.namespace, self.trigger.name).set(len(partitions))
        self._log.info(EventingLog.PARTITIONS_ASSIGNED, partitions=sorted(partitions))

    async def _process(self, record: events.Record | None) -> str:
        if record is None:
            return "invalid"  # not a CloudEvent: Knative's Kafka broker discards and commits it too
        if not filters.matches(self.trigger, record.attributes()):
            return "filtered"
        started = asyncio.get_running_loop().time()
        try:
            return await self._deliver(record)
        finally:
            elapsed = asyncio.get_running_loop().time() - started
            self._metrics.latency.labels(self.trigger.namespace, self.trigger.name).observe(elapsed)

    # --- delivery ---------------------------------------------------------------------------------------

    async def _deliver(self, record: events.Record) -> str:
        policy = self.trigger.delivery
        retry = 0
        while True:
            outcome = await self._attempt(record)
            if delivery.succeeded(outcome.status):
                reply = await self._reply(record, outcome) if outcome.status == 200 else None
                if reply is None:
                    return "delivered"
                outcome = reply  # storing the reply failed: a failed delivery
            if not delivery.retriable(outcome.status) or retry >= policy.retry:
                break
            retry += 1
            await self._sleep(delivery.backoff(policy, retry))
        self._log.info(
            EventingLog.DELIVERY_FAILED,
            id=record.attributes().get("id"),
            code=outcome.status,
            error=outcome.error,
        )
        return await self._dead_letter(record, outcome)

    async def _attempt(self, record: events.Record) -> Outcome:
        headers, body = events.to_http(record)
        headers["Prefer"] = "reply"
        outcome = await self._post(self.target.subscriber, headers, body)
        code = "" if outcome.status is None else str(outcome.status)
        self._metrics.attempts.labels(self.trigger.namespace, self.trigger.name, code).inc()
        return outcome

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        timeout = aiohttp.ClientTimeout(total=self.trigger.delivery.timeout)
        url, extra = self.target.address(url)
        try:
            async with self._session.post(
                url, headers={**headers, **extra}, data=body, timeout=timeout
            ) as response:
                answer = await response.read()
                return Outcome(response.status, dict(response.headers), answer)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Outcome(None, {}, b"", error=f"{type(exc).__name__}: {exc}")

    async def _reply(self, record: events.Record, outcome: Outcome) -> Outcome | None:
        """Sends a reply event back through the broker; None when there was none or it was stored."""
        if not outcome.body and not any(k.lower() == "ce-id" for k in outcome.headers):
            return None
        try:
            reply = events.from_http(outcome.headers, outcome.body)
        except events.InvalidEvent as exc:
            if not any(k.lower().startswith("ce-") for k in outcome.headers) and not events.media_type(
                outcome.headers
            ).startswith("application/cloudevents"):
                return None  # a plain response body, not an event: nothing to send back
            return Outcome(502, {}, str(exc).encode(), error=f"invalid reply event: {exc}")
        ttl = (record.ttl() or events.DEFAULT_TTL) - 1
        if ttl <= 0:
            self._log.info(
                EventingLog.REPLY_DROPPED, id=reply.attributes().get("id"), reason="knativebrokerttl"
            )
            return None
        headers, body = events.to_http(reply.with_attribute(events.TTL, str(ttl)))
        stored = await self._post(self.target.reply_url, headers, body)
        if delivery.succeeded(stored.status):
            return None
        return Outcome(
            stored.status or None, {}, stored.body, error=f"storing the reply failed: {stored.error}"
        )

    async def _dead_letter(self, record: events.Record, outcome: Outcome) -> str:
        sink = self.target.dead_letter_sink
        if sink is None:
            return "dropped"
        marked = record.with_attribute("knativeerrordest", self.target.subscriber)
        if outcome.status is not None:
            marked = marked.with_attribute("knativeerrorcode", str(outcome.status))
            if outcome.body:
                data = base64.b64encode(outcome.body[:ERROR_DATA_LIMIT]).decode()
                marked = marked.with_attribute("knativeerrordata", data)
        headers, body = events.to_http(marked)
        failures = 0
        while True:
            sent = await self._post(sink, headers, body)
            if delivery.succeeded(sent.status):
                return "dead-lettered"
            failures += 1
            self._log.warning(
                EventingLog.DEAD_LETTER_FAILED, code=sent.status, error=sent.error, failures=failures
            )
            await self._sleep(delivery.dead_letter_wait(self.trigger.delivery, failures))

    # --- commits ----------------------------------------------------------------------------------------

    async def _commit_every(self) -> None:
        while True:
            await self._sleep(self._commit_interval)
            try:
                await self._commit()
            except KafkaError as exc:
                self._log.warning(EventingLog.COMMIT_FAILED, error=str(exc))

    async def _commit(self) -> None:
        due = {
            partition: offset
            for partition, progress in self._progress.items()
            if (offset := progress.committable) is not None and self._committed.get(partition) != offset
        }
        if due:
            await self._consumer.commit(due)
            # A partition revoked while the commit was on its way is forgotten, not remembered again.
            self._committed.update({p: o for p, o in due.items() if p in self._progress})

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self._progress.values())
