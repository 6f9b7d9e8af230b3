"""The RabbitMQ reader on the devstack's real server, checked against rabbitmqctl in the same test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from autoscaler.errors import BacklogError, SourceError, SourceUnavailable
from autoscaler.sources import rabbitmq
from autoscaler.sources.reading import ReaderSettings
from devstack import rabbitmq_server
from tests.integration.source_servers import amqp_channel, publish, rabbitmqctl_queues, take_without_ack
from tests.stack import Devstack, unique

pytestmark = pytest.mark.devstack

PREFIXES = ("busy-", "idle-", "inflight-", "paged-", "deleted-", "unmanaged-")


@pytest.fixture(autouse=True)
async def delete_test_queues(devstack: Devstack) -> AsyncIterator[None]:
    """Deletes, after each test, the queues it made (their names start with this run's prefixes)."""
    yield
    tool = await rabbitmqctl_queues(devstack.layout)
    async with amqp_channel(devstack.layout) as channel:
        for name in tool:
            if name.startswith(PREFIXES):
                await channel.queue_delete(name)


@pytest.fixture
async def reader(devstack: Devstack) -> AsyncIterator[rabbitmq.QueueReader]:
    async with rabbitmq.QueueReader(
        devstack.layout.rabbitmq_management_url,
        username=rabbitmq_server.USERNAME,
        password=lambda: rabbitmq_server.PASSWORD,
    ) as queue_reader:
        yield queue_reader


async def test_ready_and_unacknowledged_counts_equal_rabbitmqctl_list_queues(
    devstack: Devstack, reader: rabbitmq.QueueReader
) -> None:
    busy, idle = unique("busy"), unique("idle")
    async with amqp_channel(devstack.layout) as channel:
        await publish(channel, busy, 30)
        await publish(channel, idle, 4)
        await take_without_ack(channel, busy, 12)
        query = rabbitmq.QueueQuery("/", (busy, idle))

        result = await reader.read(queries=[query])
        tool = await rabbitmqctl_queues(devstack.layout)

    counts = result[query]
    assert not isinstance(counts, SourceError)
    assert {c.queue: (c.ready, c.unacked) for c in counts} == {busy: tool[busy], idle: tool[idle]}
    assert tool[busy] == (18, 12)
    assert reader.metrics.requests_by_api == {"queues": 1}


async def test_twenty_delivered_unacknowledged_and_none_ready_is_a_backlog_of_twenty_not_zero(
    devstack: Devstack, reader: rabbitmq.QueueReader
) -> None:
    name = unique("inflight")
    async with amqp_channel(devstack.layout) as channel:
        await publish(channel, name, 20)
        await take_without_ack(channel, name, 20)
        query = rabbitmq.QueueQuery("/", (name,))

        result = await reader.read(queries=[query])
        tool = await rabbitmqctl_queues(devstack.layout)

    assert result[query] == (rabbitmq.QueueCounts(name, "/", ready=0, unacked=20),)
    assert tool[name] == (0, 20)


async def test_a_pattern_reads_every_page_of_a_vhost_with_more_queues_than_one_page(
    devstack: Devstack,
) -> None:
    prefix = unique("paged")
    async with amqp_channel(devstack.layout) as channel:
        for i in range(25):
            await publish(channel, f"{prefix}-{i:02d}", i % 3)
        query = rabbitmq.QueueQuery("/", pattern=rf"{prefix}-\d+")
        async with rabbitmq.QueueReader(
            devstack.layout.rabbitmq_management_url,
            username=rabbitmq_server.USERNAME,
            password=lambda: rabbitmq_server.PASSWORD,
            settings=ReaderSettings(page_size=10),
        ) as small_pages:
            result = await small_pages.read(queries=[query])
            pages = small_pages.metrics.requests_by_api["queues"]
        tool = await rabbitmqctl_queues(devstack.layout)

    counts = result[query]
    assert not isinstance(counts, SourceError)
    assert {c.queue: (c.ready, c.unacked) for c in counts} == {
        name: row for name, row in tool.items() if name.startswith(prefix)
    }
    assert len(counts) == 25
    assert pages >= 3


async def test_a_deleted_queue_is_an_error_of_its_query_not_zero(
    devstack: Devstack, reader: rabbitmq.QueueReader
) -> None:
    name = unique("deleted")
    async with amqp_channel(devstack.layout) as channel:
        await publish(channel, name, 5)
        query = rabbitmq.QueueQuery("/", (name,))
        before = await reader.read(queries=[query])
        await channel.queue_delete(name)

        after = await reader.read(queries=[query])

    assert before[query] == (rabbitmq.QueueCounts(name, "/", ready=5, unacked=0),)
    assert isinstance(after[query], BacklogError)
    assert "does not exist" in str(after[query])


async def test_the_management_plugin_stopped_is_an_unavailable_source_for_every_query(
    devstack: Devstack, reader: rabbitmq.QueueReader
) -> None:
    name = unique("unmanaged")
    async with amqp_channel(devstack.layout) as channel:
        await publish(channel, name, 3)
    query = rabbitmq.QueueQuery("/", (name,))
    await asyncio.to_thread(rabbitmq_server.stop_management, devstack.layout)
    try:
        result = await reader.read(queries=[query])
    finally:
        await asyncio.to_thread(rabbitmq_server.start_management, devstack.layout)

    assert isinstance(result[query], SourceUnavailable)
    assert reader.metrics.requests_by_api["queues"] == reader.settings.retry_attempts
    assert (await reader.read(queries=[query]))[query] == (rabbitmq.QueueCounts(name, "/", 3, 0),)
