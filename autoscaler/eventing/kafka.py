"""The event broker's Kafka boundary: producing records with acks=all, creating broker topics, consuming a
Trigger's consumer group with manual commits. aiokafka errors become ``autoscaler.errors`` here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka import errors as aiokafka_errors
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from autoscaler.errors import KafkaError, KafkaUnavailable
from autoscaler.eventing.events import Record
from autoscaler.observability.log_events import EventingLog

if TYPE_CHECKING:
    from autoscaler.eventing.dispatcher import Rebalance

log = structlog.get_logger(__name__)

_UNREACHABLE = (
    aiokafka_errors.KafkaConnectionError,
    aiokafka_errors.KafkaTimeoutError,
    OSError,
    TimeoutError,
)


def translate(exc: BaseException, what: str) -> KafkaError:
    if isinstance(exc, _UNREACHABLE) or (isinstance(exc, aiokafka_errors.KafkaError) and exc.retriable):
        return KafkaUnavailable(f"{what}: Kafka is unavailable: {exc!r}")
    return KafkaError(f"{what}: {exc!r}")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap: str
    request_timeout: float = 10.0
    extra: Mapping[str, Any] | None = None  # TLS / SASL arguments from the connections file


class Producer:
    """One idempotent producer (acks=all) shared by every Broker; started on first use and after a failure."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._settings.bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=1,
                    request_timeout_ms=int(self._settings.request_timeout * 1000),
                    **dict(self._settings.extra or {}),
                )
                try:
                    await producer.start()
                except BaseException as exc:
                    await producer.stop()
                    raise translate(exc, "starting the producer") from exc
                self._producer = producer
            return self._producer

    async def send(self, *, topic: str, record: Record) -> None:
        """Returns once every in-sync replica has the record; KafkaUnavailable/KafkaError otherwise.

        An idempotent producer never gives up on a record while Kafka is away (it retries until Kafka is
        back, to keep the partition's sequence), so the wait is bounded here by ``request_timeout``: the
        caller hears "unavailable" in time, and the record, still held by the producer, may be written
        once Kafka returns (a client retrying then makes a duplicate, never a loss)."""
        producer = await self._started()
        timeout = self._settings.request_timeout
        try:
            async with asyncio.timeout(timeout):
                acknowledged = await producer.send(
                    topic, value=record.value, key=record.key, headers=list(record.headers)
                )
                acknowledged.add_done_callback(_retrieved)
                await asyncio.shield(acknowledged)
        except TimeoutError as exc:
            raise KafkaUnavailable(
                f"producing to {topic}: Kafka is unavailable: no acknowledgement within {timeout:g} s"
            ) from exc
        except aiokafka_errors.KafkaError as exc:
            error = translate(exc, f"producing to {topic}")
            if not isinstance(error, KafkaUnavailable):
                # e.g. OutOfOrderSequenceNumber after Kafka came back without a record the producer had
                # numbered: aiokafka's producer stops sending for good; the next event gets a new one.
                await self._discard(producer, error)
            raise error from exc

    async def _discard(self, producer: AIOKafkaProducer, error: KafkaError) -> None:
        async with self._lock:
            current = self._producer is producer
            if current:
                self._producer = None
        if not current:
            return  # another request already replaced it
        log.warning(EventingLog.PRODUCER_REPLACED, error=str(error))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._settings.request_timeout):
                await producer.stop()

    async def close(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


def _retrieved(acknowledged: asyncio.Future[Any]) -> None:
    """Marks a record's outcome as seen, for one whose request already timed out (nobody awaits it)."""
    if not acknowledged.cancelled():
        acknowledged.exception()


class Topics:
    """Creates broker topics (idempotently) and remembers which exist."""

    def __init__(self, settings: KafkaSettings, *, partitions: int, replication: int = 1) -> None:
        self._settings = settings
        self._partitions = partitions
        self._replication = replication
        self._known: set[str] = set()
        self._lock = asyncio.Lock()

    async def ensure(self, topic: str) -> None:
        if topic in self._known:
            return
        async with self._lock:
            if topic in self._known:
                return
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._settings.bootstrap,
                request_timeout_ms=int(self._settings.request_timeout * 1000),
                **dict(self._settings.extra or {}),
            )
            try:
                await admin.start()
                response = await admin.create_topics([NewTopic(topic, self._partitions, self._replication)])
            except aiokafka_errors.TopicAlreadyExistsError:
                response = None
            except BaseException as exc:
                raise translate(exc, f"creating topic {topic}") from exc
            finally:
                await admin.close()
            codes = [code for _name, code, *_ in getattr(response, "topic_errors", [])]
            if any(code not in (0, aiokafka_errors.TopicAlreadyExistsError.errno) for code in codes):
                raise KafkaError(f"creating topic {topic}: error codes {codes}")
            if codes and codes[0] == 0:
                log.info(EventingLog.TOPIC_CREATED, topic=topic, partitions=self._partitions)
            self._known.add(topic)


class GroupConsumer:
    """A Trigger's consumer group on its broker topic: manual commits, reading from the latest offset
    when the group has none (Knative's Kafka broker: auto.offset.reset=latest). Kafka's group assignment
    shares the topic's partitions over every dispatcher replica running the Trigger; ``rebalance`` hears
    of every change (``revoked`` before a partition goes, ``assigned`` once the new set is known)."""

    def __init__(self, settings: KafkaSettings, *, topic: str, group: str, max_records: int) -> None:
        self.topic = topic
        self.group = group
        self._max_records = max_records
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            max_poll_records=max_records,
            request_timeout_ms=int(settings.request_timeout * 1000) + 30000,
            **dict(settings.extra or {}),
        )

    async def start(self, rebalance: Rebalance) -> None:
        """Joins the group and returns: the partitions come in the background (a member may hold none,
        when the group has more members than the topic has partitions)."""
        self._consumer.subscribe([self.topic], listener=_Listener(self, rebalance))
        try:
            await self._consumer.start()
        except BaseException as exc:
            await self._consumer.stop()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise translate(exc, f"joining group {self.group}") from exc

    async def anchor(self, partitions: set[int]) -> None:
        """Every one of ``partitions`` without a committed offset gets one at its end (where reading
        starts), so the Trigger's backlog counts from the moment it started delivering (for its
        subscriber's scaling and across dispatcher restarts) instead of from whenever its first record
        arrives. Called on every assignment, before the partitions' first records are fetched."""
        try:
            anchors = {}
            for partition in sorted(partitions):
                tp = TopicPartition(self.topic, partition)
                if await self._consumer.committed(tp) is None:
                    anchors[tp] = await self._consumer.position(tp)
            if anchors:
                await self._consumer.commit(anchors)
        except aiokafka_errors.KafkaError as exc:
            raise translate(exc, f"anchoring group {self.group}") from exc

    async def fetch(self, timeout: float) -> Sequence[ConsumerRecord[bytes, bytes]]:
        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=self._max_records
            )
        except aiokafka_errors.KafkaError as exc:
            raise translate(exc, f"fetching for group {self.group}") from exc
        return [record for records in batches.values() for record in records]

    async def commit(self, offsets: Mapping[int, int]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit({TopicPartition(self.topic, p): o for p, o in offsets.items()})
        except aiokafka_errors.KafkaError as exc:
            raise translate(exc, f"committing for group {self.group}") from exc

    def pause(self, partitions: set[int]) -> None:
        self._consumer.pause(*(TopicPartition(self.topic, p) for p in partitions))

    def resume(self, partitions: set[int]) -> None:
        self._consumer.resume(*(TopicPartition(self.topic, p) for p in partitions))

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self._consumer.assignment()}

    async def stop(self) -> None:
        await self._consumer.stop()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callbacks, in partition numbers of the consumer's topic. They run inside the
    group's join (the next member waits for ``revoked``; fetching waits for ``assigned``)."""

    def __init__(self, consumer: GroupConsumer, rebalance: Rebalance) -> None:
        self._consumer = consumer
        self._rebalance = rebalance

    def _ours(self, partitions: Iterable[TopicPartition]) -> set[int]:
        return {tp.partition for tp in partitions if tp.topic == self._consumer.topic}

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._rebalance.revoked(self._ours(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = self._ours(assigned)
        try:
            await self._consumer.anchor(partitions)
        except KafkaError as exc:
            log.warning(EventingLog.ANCHOR_FAILED, group=self._consumer.group, error=str(exc))
        await self._rebalance.assigned(partitions)
