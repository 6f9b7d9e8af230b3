"""The ingress's producer when Kafka stops answering: an idempotent aiokafka producer retries a record until
Kafka is back (it never expires it), so ``Producer.send`` bounds the wait itself and says the event was not
stored. aiokafka's producer is stood in for; the record it still holds may be written once Kafka returns."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, ClassVar

import pytest
from aiokafka import errors as aiokafka_errors

from autoscaler.errors import KafkaError, KafkaUnavailable
from autoscaler.eventing import events, kafka


class SilentKafkaProducer:
    """Takes every record and never hears back from Kafka (a broker gone away mid-send)."""

    made: ClassVar[list[SilentKafkaProducer]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.pending: list[asyncio.Future[object]] = []
        SilentKafkaProducer.made.append(self)

    async def start(self) -> None:
        pass

    async def send(self, topic: str, **_record: Any) -> asyncio.Future[object]:
        acknowledged: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.pending.append(acknowledged)
        return acknowledged

    async def send_and_wait(self, topic: str, **record: Any) -> object:
        return await (await self.send(topic, **record))

    async def stop(self) -> None:
        for acknowledged in self.pending:
            acknowledged.cancel()


@pytest.fixture
def silent_kafka(monkeypatch: pytest.MonkeyPatch) -> type[SilentKafkaProducer]:
    SilentKafkaProducer.made = []
    monkeypatch.setattr(kafka, "AIOKafkaProducer", SilentKafkaProducer)
    return SilentKafkaProducer


RECORD = events.Record((("ce_id", b"e-1"),), None, b"{}")


async def test_a_record_kafka_never_acknowledges_fails_as_unavailable_after_the_request_timeout(
    silent_kafka: type[SilentKafkaProducer],
) -> None:
    producer = kafka.Producer(kafka.KafkaSettings("127.0.0.1:1", request_timeout=0.05))
    try:
        with pytest.raises(KafkaUnavailable, match=r"no acknowledgement within 0\.05 s"):
            await asyncio.wait_for(producer.send(topic="t", record=RECORD), timeout=10)
    finally:
        await producer.close()
    assert len(silent_kafka.made[0].pending) == 1


async def test_a_record_failing_after_its_request_timed_out_leaves_no_unretrieved_error(
    silent_kafka: type[SilentKafkaProducer],
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    producer = kafka.Producer(kafka.KafkaSettings("127.0.0.1:1", request_timeout=0.05))
    try:
        with pytest.raises(KafkaUnavailable):
            await asyncio.wait_for(producer.send(topic="t", record=RECORD), timeout=10)
        late = silent_kafka.made[0].pending.pop()
        late.set_exception(RuntimeError("the broker refused it later"))
        await asyncio.sleep(0)
        del late
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
        await producer.close()
    assert [c.get("message") for c in reported] == []


class BrokenAfterOutageProducer(SilentKafkaProducer):
    """The first one made fails every record the way aiokafka's does once its sender stopped on an
    out-of-order sequence (Kafka came back without a record the producer had numbered); later ones work."""

    async def send(self, topic: str, **_record: Any) -> asyncio.Future[object]:
        if self is SilentKafkaProducer.made[0]:
            raise aiokafka_errors.OutOfOrderSequenceNumber()
        acknowledged: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return acknowledged


async def test_a_producer_broken_by_a_non_retriable_error_is_replaced_so_the_next_event_is_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    SilentKafkaProducer.made = []
    monkeypatch.setattr(kafka, "AIOKafkaProducer", BrokenAfterOutageProducer)
    producer = kafka.Producer(kafka.KafkaSettings("127.0.0.1:1", request_timeout=5))
    try:
        with pytest.raises(KafkaError, match="OutOfOrderSequenceNumber"):
            await producer.send(topic="t", record=RECORD)
        await asyncio.wait_for(producer.send(topic="t", record=RECORD), timeout=10)
    finally:
        await producer.close()
    assert len(SilentKafkaProducer.made) == 2
