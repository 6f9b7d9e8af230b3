"""A Trigger's partitions changing hands between dispatcher replicas: what is committed on a revoke, where a
new partition is anchored, and a member holding none. Kafka is behind the ``Consumer`` Protocol (and, for
``kafka.GroupConsumer``, behind a stand-in for aiokafka's consumer); subscribers are real HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from autoscaler.eventing import dispatcher, filters, kafka
from autoscaler.observability.log_events import EventingLog
from devstack.loopback import running
from tests.stack import eventually

TOPIC = "knative-broker-shop-default"


@dataclass
class Raw:
    """A consumed record as aiokafka hands it over: a binary-mode CloudEvent, id ``e<partition>-<offset>``."""

    partition: int
    offset: int

    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]:
        return (
            ("ce_specversion", b"1.0"),
            ("ce_id", f"e{self.partition}-{self.offset}".encode()),
            ("ce_source", b"/tests"),
            ("ce_type", b"com.example.created"),
        )

    key: bytes | None = None
    value: bytes = b"{}"


@dataclass
class FakeConsumer:
    """Hands out the queued batches, then nothing; records every commit."""

    batches: asyncio.Queue[list[Raw]] = field(default_factory=asyncio.Queue)
    commits: list[dict[int, int]] = field(default_factory=list)
    fetches: int = 0
    rebalance: dispatcher.Rebalance | None = None

    async def start(self, rebalance: dispatcher.Rebalance) -> None:
        self.rebalance = rebalance

    async def fetch(self, timeout: float) -> Sequence[object]:
        self.fetches += 1
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.batches.get(), timeout)
        return []

    async def commit(self, offsets: dict[int, int]) -> None:
        if offsets:
            self.commits.append(dict(offsets))

    async def stop(self) -> None:
        pass


@dataclass
class GatedSubscriber:
    """Answers 200 at once, except for the ids in ``held``, which wait for ``release``."""

    held: set[str]
    release: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        event_id = request.headers.get("ce-id", "")
        self.received.append(event_id)
        if event_id in self.held:
            await self.release.wait()
        return web.Response(status=200)


@contextlib.asynccontextmanager
async def delivering(
    consumer: FakeConsumer,
    sink: GatedSubscriber,
    registry: CollectorRegistry,
    *,
    max_in_flight: int = 10,
    commit_interval: float = 3600.0,  # only revokes and the stop commit, unless a test says otherwise
) -> AsyncIterator[tuple[dispatcher.TriggerDelivery, asyncio.Task[None]]]:
    app = web.Application()
    app.router.add_route("POST", "/", sink.handle)
    async with running(app) as port, aiohttp.ClientSession() as session:
        trigger = filters.parse_trigger(
            {
                "metadata": {"name": "created", "namespace": "shop"},
                "spec": {"broker": "default", "subscriber": {"uri": f"http://127.0.0.1:{port}/"}},
            }
        )
        runner = dispatcher.TriggerDelivery(
            trigger=trigger,
            target=dispatcher.Target(
                subscriber=f"http://127.0.0.1:{port}/", dead_letter_sink=None, reply_url="http://unused"
            ),
            consumer=consumer,
            session=session,
            metrics=dispatcher.DispatcherMetrics(registry),
            max_in_flight=max_in_flight,
            commit_interval=commit_interval,
            revoke_grace=0.05,
        )
        task = asyncio.create_task(runner.run())
        try:
            await eventually(
                lambda: asyncio.sleep(0, consumer.rebalance), lambda r: r is runner, timeout=10, what="start"
            )
            yield runner, task
        finally:
            sink.release.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def delivery_tasks(partition: int) -> dict[int, asyncio.Task[Any]]:
    prefix = f"delivery {partition}/"
    return {
        int(t.get_name().removeprefix(prefix)): t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(prefix)
    }


async def test_a_revoke_commits_what_finished_and_a_late_delivery_neither_commits_nor_fails() -> None:
    consumer, sink, registry = FakeConsumer(), GatedSubscriber(held={"e0-1"}), CollectorRegistry()
    async with delivering(consumer, sink, registry) as (runner, task):
        await runner.assigned({0, 1})
        consumer.batches.put_nowait([Raw(0, 0), Raw(0, 1), Raw(0, 2), Raw(1, 7)])
        await eventually(
            lambda: asyncio.sleep(0, set(sink.received)),
            lambda got: got == {"e0-0", "e0-1", "e0-2", "e1-7"},
            timeout=10,
            what="every record at the subscriber",
        )
        await eventually(
            lambda: asyncio.sleep(0, runner.in_flight), lambda n: n == 1, timeout=10, what="only e0-1 left"
        )
        late = delivery_tasks(0)[1]

        await runner.revoked({0, 1})

        # Partition 0 up to the held record (the next to read after it), partition 1 past its only record.
        assert consumer.commits == [{0: 1, 1: 8}]
        assert (
            registry.get_sample_value(
                "queue_autoscaler_dispatcher_partitions", {"namespace": "shop", "trigger": "created"}
            )
            == 0
        )
        sink.release.set()
        await late
        assert late.exception() is None
        fetched = consumer.fetches
        await eventually(
            lambda: asyncio.sleep(0, consumer.fetches), lambda n: n > fetched, timeout=10, what="a next fetch"
        )
        assert not task.done()
    assert consumer.commits == [{0: 1, 1: 8}]  # the late delivery committed nothing, not even on stop


async def test_records_of_a_partition_revoked_while_they_waited_for_a_slot_are_not_delivered() -> None:
    consumer, sink, registry = FakeConsumer(), GatedSubscriber(held={"e0-0", "e0-1"}), CollectorRegistry()
    async with delivering(consumer, sink, registry, max_in_flight=1) as (runner, _task):
        await runner.assigned({0})
        consumer.batches.put_nowait([Raw(0, 0), Raw(0, 1)])
        await eventually(
            lambda: asyncio.sleep(0, sink.received), lambda got: got == ["e0-0"], timeout=10, what="e0-0"
        )
        fetched = consumer.fetches  # the fetch loop now waits for a slot for e0-1
        await runner.revoked({0})
        sink.release.set()
        await eventually(
            lambda: asyncio.sleep(0, consumer.fetches), lambda n: n > fetched, timeout=10, what="a next fetch"
        )
        await eventually(
            lambda: asyncio.sleep(0, delivery_tasks(0)), lambda t: t == {}, timeout=10, what="deliveries done"
        )
    assert sink.received == ["e0-0"]
    assert consumer.commits == [{0: 0}]  # nothing past e0-0, which was still in flight


async def test_an_assignment_is_logged_and_counted_and_the_series_goes_when_the_trigger_stops() -> None:
    consumer, sink, registry = FakeConsumer(), GatedSubscriber(held=set()), CollectorRegistry()
    labels = {"namespace": "shop", "trigger": "created"}
    with capture_logs() as logs:
        async with delivering(consumer, sink, registry) as (runner, _task):
            await runner.assigned({2, 0})
            held = registry.get_sample_value("queue_autoscaler_dispatcher_partitions", labels)
    assert held == 2
    assert registry.get_sample_value("queue_autoscaler_dispatcher_partitions", labels) is None
    assigned = [e for e in logs if e["event"] == EventingLog.PARTITIONS_ASSIGNED]
    assert [e["partitions"] for e in assigned] == [[0, 2]]


# --- kafka.GroupConsumer, with aiokafka's consumer stood in for --------------------------------------------


class StandInConsumer:
    """What GroupConsumer uses of AIOKafkaConsumer: a member that has no partition unless told."""

    made: ClassVar[list[StandInConsumer]] = []

    def __init__(self, **_options: Any) -> None:
        self.listener: Any = None
        self.topics: list[str] = []
        self.committed_offsets: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.polls = 0
        StandInConsumer.made.append(self)

    def subscribe(self, topics: list[str], *, listener: Any) -> None:
        self.topics, self.listener = topics, listener

    async def start(self) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return set()

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.polls += 1
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp.partition)

    async def position(self, tp: TopicPartition) -> int:
        return self.ends[tp.partition]

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def stop(self) -> None:
        pass


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> type[StandInConsumer]:
    StandInConsumer.made = []
    monkeypatch.setattr(kafka, "AIOKafkaConsumer", StandInConsumer)
    return StandInConsumer


@dataclass
class HeardRebalance:
    heard: list[tuple[str, set[int]]] = field(default_factory=list)
    anchored_first: list[list[dict[TopicPartition, int]]] = field(default_factory=list)
    consumer: StandInConsumer | None = None

    async def revoked(self, partitions: set[int]) -> None:
        self.heard.append(("revoked", partitions))

    async def assigned(self, partitions: set[int]) -> None:
        assert self.consumer is not None
        self.anchored_first.append(list(self.consumer.commits))
        self.heard.append(("assigned", partitions))


async def test_an_assigned_partition_never_committed_is_anchored_at_its_end_before_the_trigger_hears_of_it(
    stand_in: type[StandInConsumer],
) -> None:
    group = kafka.GroupConsumer(kafka.KafkaSettings("127.0.0.1:1"), topic=TOPIC, group="g", max_records=10)
    heard = HeardRebalance()
    await group.start(heard)
    inner = stand_in.made[0]
    heard.consumer = inner
    assert inner.topics == [TOPIC]
    inner.committed_offsets = {0: 5}
    inner.ends = {0: 9, 1: 42}

    await inner.listener.on_partitions_assigned(
        {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1), TopicPartition("another-topic", 3)}
    )
    await inner.listener.on_partitions_revoked({TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)})

    assert inner.commits == [{TopicPartition(TOPIC, 1): 42}]  # partition 0 keeps its own commit
    assert heard.anchored_first == [[{TopicPartition(TOPIC, 1): 42}]]
    assert heard.heard == [("assigned", {0, 1}), ("revoked", {0, 1})]
    await group.stop()


async def test_a_member_without_partitions_starts_and_fetches_without_waiting_for_an_assignment(
    stand_in: type[StandInConsumer],
) -> None:
    group = kafka.GroupConsumer(kafka.KafkaSettings("127.0.0.1:1"), topic=TOPIC, group="g", max_records=10)
    sink, registry = GatedSubscriber(held=set()), CollectorRegistry()
    app = web.Application()
    app.router.add_route("POST", "/", sink.handle)
    async with running(app) as port, aiohttp.ClientSession() as session:
        trigger = filters.parse_trigger(
            {
                "metadata": {"name": "idle", "namespace": "shop"},
                "spec": {"broker": "default", "subscriber": {"uri": f"http://127.0.0.1:{port}/"}},
            }
        )
        runner = dispatcher.TriggerDelivery(
            trigger=trigger,
            target=dispatcher.Target(f"http://127.0.0.1:{port}/", None, "http://unused"),
            consumer=group,
            session=session,
            metrics=dispatcher.DispatcherMetrics(registry),
            max_in_flight=10,
        )
        task = asyncio.create_task(runner.run())
        try:
            await eventually(
                lambda: asyncio.sleep(0, stand_in.made[0].polls if stand_in.made else 0),
                lambda polls: polls >= 2,
                timeout=10,
                what="the fetch loop polling with no partition assigned",
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert sink.received == []
