"""The NATS JetStream reader on the devstack's real server, checked against its /jsz answer in one test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from autoscaler.errors import BacklogError
from autoscaler.sources import nats
from tests.integration.source_servers import jetstream, jsz_consumer, stream_with_consumer
from tests.stack import Devstack, unique

pytestmark = pytest.mark.devstack


@pytest.fixture
async def reader(devstack: Devstack) -> AsyncIterator[nats.ConsumerReader]:
    async with nats.ConsumerReader(devstack.layout.nats_monitoring_url) as consumer_reader:
        yield consumer_reader


async def test_pending_and_ack_pending_equal_the_jsz_answer_after_ten_of_thirty_were_delivered(
    devstack: Devstack, reader: nats.ConsumerReader
) -> None:
    stream = unique("orders").replace("-", "_")
    async with jetstream(devstack.layout) as js:
        await stream_with_consumer(js, stream, "workers")
        for i in range(30):
            await js.publish(f"{stream}.new", f"m{i}".encode())
        subscription = await js.pull_subscribe_bind("workers", stream=stream)
        taken = await subscription.fetch(10, timeout=5)
        query = nats.ConsumerQuery(stream, "workers")

        result = await reader.read(queries=[query])
        tool = await jsz_consumer(devstack.layout, stream, "workers")
        await js.delete_stream(stream)

    assert len(taken) == 10
    assert result[query] == nats.ConsumerBacklog(
        pending=int(str(tool["num_pending"])), ack_pending=int(str(tool["num_ack_pending"]))
    )
    assert result[query] == nats.ConsumerBacklog(pending=20, ack_pending=10)
    assert reader.metrics.requests_by_api == {"jsz": 1}


async def test_a_missing_consumer_is_an_error_never_the_streams_last_sequence(
    devstack: Devstack, reader: nats.ConsumerReader
) -> None:
    stream = unique("noconsumer").replace("-", "_")
    async with jetstream(devstack.layout) as js:
        await stream_with_consumer(js, stream, "workers")
        for i in range(5):
            await js.publish(f"{stream}.new", f"m{i}".encode())
        gone = nats.ConsumerQuery(stream, "gone")
        fine = nats.ConsumerQuery(stream, "workers")

        result = await reader.read(queries=[gone, fine])
        await js.delete_stream(stream)

    assert isinstance(result[gone], BacklogError)
    assert "consumer 'gone' does not exist" in str(result[gone])
    assert result[fine] == nats.ConsumerBacklog(pending=5, ack_pending=0)
