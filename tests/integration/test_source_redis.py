"""The Redis Streams reader on the devstack's real server, checked against redis-cli in the same test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from autoscaler.errors import BacklogError
from autoscaler.sources import redis
from tests.integration.source_servers import redis_cli_groups, redis_client
from tests.stack import Devstack, unique

pytestmark = pytest.mark.devstack


@pytest.fixture
async def reader(devstack: Devstack) -> AsyncIterator[redis.StreamReader]:
    async with redis.StreamReader(devstack.layout.redis_url) as stream_reader:
        yield stream_reader


async def test_lag_and_pending_equal_redis_cli_xinfo_groups_for_two_groups_in_one_round_trip(
    devstack: Devstack, reader: redis.StreamReader
) -> None:
    stream = unique("orders")
    async with redis_client(devstack.layout) as client:
        for i in range(30):
            await client.xadd(stream, {"n": str(i)})
        await client.xgroup_create(stream, "workers", id="0")
        await client.xgroup_create(stream, "audit", id="0")
        await client.xreadgroup("workers", "w1", {stream: ">"}, count=8)
        delivered: Any = await client.xreadgroup("audit", "a1", {stream: ">"}, count=5)
        await client.xack(stream, "audit", *(entry_id for entry_id, _ in delivered[0][1]))
        workers, audit = redis.StreamQuery(stream, "workers", length=True), redis.StreamQuery(stream, "audit")

        result = await reader.read(queries=[workers, audit])
        tool = await redis_cli_groups(devstack.layout, stream)

    assert result[workers] == redis.StreamBacklog(
        lag=int(tool["workers"]["lag"]), pending=int(tool["workers"]["pending"]), length=30
    )
    assert result[audit] == redis.StreamBacklog(lag=int(tool["audit"]["lag"]), pending=0)
    assert (tool["workers"]["lag"], tool["workers"]["pending"]) == ("22", "8")
    assert reader.metrics.requests_by_api == {"pipeline": 1}


async def test_xdel_inside_the_undelivered_range_makes_the_lag_unknown_not_zero(
    devstack: Devstack, reader: redis.StreamReader
) -> None:
    stream = unique("deleted")
    async with redis_client(devstack.layout) as client:
        ids = [await client.xadd(stream, {"n": str(i)}) for i in range(10)]
        await client.xgroup_create(stream, "workers", id="0")
        await client.xreadgroup("workers", "w1", {stream: ">"}, count=3)
        query = redis.StreamQuery(stream, "workers")
        before = await reader.read(queries=[query])
        await client.xdel(stream, ids[6])

        after = await reader.read(queries=[query])
        tool = await redis_cli_groups(devstack.layout, stream)

    assert before[query] == redis.StreamBacklog(lag=7, pending=3)
    assert tool["workers"]["lag"] == "nil"
    assert after[query] == redis.StreamBacklog(lag=None, pending=3)


async def test_a_missing_stream_and_a_missing_group_are_clear_errors_of_their_queries(
    devstack: Devstack, reader: redis.StreamReader
) -> None:
    stream = unique("present")
    async with redis_client(devstack.layout) as client:
        await client.xadd(stream, {"n": "1"})
        await client.xgroup_create(stream, "workers", id="0")
    no_key = redis.StreamQuery(unique("absent"), "workers")
    no_group = redis.StreamQuery(stream, "nobody")
    fine = redis.StreamQuery(stream, "workers")

    result = await reader.read(queries=[no_key, no_group, fine])

    assert isinstance(result[no_key], BacklogError)
    assert "does not exist" in str(result[no_key])
    assert isinstance(result[no_group], BacklogError)
    assert "NOGROUP" in str(result[no_group])
    assert result[fine] == redis.StreamBacklog(lag=1, pending=0)
