"""OffsetReader against the real devstack broker: exact offsets, constant request counts, per-group errors."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.cli import lag as lag_command
from autoscaler.errors import GroupError, KafkaError, KafkaUnavailable
from autoscaler.model import PartitionOffsets
from autoscaler.sources.kafka import offsets
from autoscaler.sources.kafka.offsets import GroupOffsets, GroupQuery, OffsetReader
from autoscaler.sources.kafka.pool import ReaderPool
from tests.stack import (
    Devstack,
    commit,
    create_topic,
    delete_records,
    kafka_tool_describe,
    list_topics,
    produce,
    unique,
)

pytestmark = pytest.mark.devstack


@pytest.fixture
def kafka_bootstrap(devstack: Devstack) -> str:
    return devstack.kafka_bootstrap


def offsets_of(outcome: GroupOffsets | KafkaError) -> GroupOffsets:
    assert not isinstance(outcome, KafkaError), f"expected offsets, got {outcome!r}"
    return outcome


async def test_offsets_of_a_six_partition_topic_match_what_kafkas_consumer_groups_tool_prints(
    kafka_bootstrap: str,
) -> None:
    topic, group = unique("offsets"), unique("group")
    await create_topic(kafka_bootstrap, topic, 6)
    await produce(kafka_bootstrap, topic, 1000, partitions=6)
    await commit(kafka_bootstrap, group, topic, {0: 100, 1: 90, 2: 70, 3: 60, 4: 50, 5: 30})

    query = GroupQuery(group, (topic,))
    async with OffsetReader(kafka_bootstrap) as reader:
        rows = offsets_of((await reader.read(queries=[query]))[query])
    tool = await kafka_tool_describe(kafka_bootstrap, group)

    assert sorted(tool) == [(topic, p) for p in range(6)]
    for row in rows:
        expected = tool[(row.topic, row.partition)]
        assert (row.committed, row.end) == (expected.current, expected.end)
        assert lag_command.tool_lag(row) == expected.lag
    assert [row.partition for row in rows] == [0, 1, 2, 3, 4, 5]
    assert sum(row.committed or 0 for row in rows) == 400
    assert sum(row.end or 0 for row in rows) == 1000
    assert {row.start for row in rows} == {0}


@pytest.mark.parametrize("group_count", [1, 100])
async def test_a_read_costs_the_same_requests_for_1_and_for_100_groups(
    kafka_bootstrap: str, group_count: int
) -> None:
    topics = [unique("count") for _ in range(3)]
    for topic in topics:
        await create_topic(kafka_bootstrap, topic, 4)
        await produce(kafka_bootstrap, topic, 40, partitions=4)
    groups = [unique("group") for _ in range(group_count)]
    await asyncio.gather(
        *(commit(kafka_bootstrap, g, topics[i % 3], {0: 1, 1: 2, 2: 3, 3: 4}) for i, g in enumerate(groups))
    )
    # Even-numbered groups read every topic they committed to, odd-numbered ones name their topic.
    queries = [GroupQuery(g) if i % 2 == 0 else GroupQuery(g, (topics[i % 3],)) for i, g in enumerate(groups)]
    registry = CollectorRegistry()

    async with OffsetReader(kafka_bootstrap, registry=registry) as reader:
        cold = await reader.read(queries=queries)
        cold_requests = dict(reader.requests_by_api)
        reader.requests_by_api.clear()
        warm = await reader.read(queries=queries)
        warm_requests = dict(reader.requests_by_api)

    # Cold: bootstrap + one Metadata for the topics, one batched FindCoordinator, then the warm plan.
    assert cold_requests == {"Metadata": 2, "FindCoordinator": 1, "OffsetFetch": 1, "ListOffsets": 2}
    # Warm: one OffsetFetch for every group on the (single) coordinator, latest + earliest on the leader.
    assert warm_requests == {"OffsetFetch": 1, "ListOffsets": 2}
    for api, count in {"Metadata": 2, "FindCoordinator": 1, "OffsetFetch": 2, "ListOffsets": 4}.items():
        assert registry.get_sample_value("queue_autoscaler_kafka_requests_total", {"api": api}) == count
    assert cold == warm
    for i, query in enumerate(queries):
        rows = offsets_of(warm[query])
        assert [(r.topic, r.partition, r.committed, r.end, r.start) for r in rows] == [
            (topics[i % 3], p, p + 1, 10, 0) for p in range(4)
        ]


async def test_a_partition_without_a_committed_offset_reads_as_committed_none(kafka_bootstrap: str) -> None:
    topic, group = unique("uncommitted"), unique("group")
    await create_topic(kafka_bootstrap, topic, 3)
    await produce(kafka_bootstrap, topic, 30, partitions=3)
    await commit(kafka_bootstrap, group, topic, {0: 5})
    named, every = GroupQuery(group, (topic,)), GroupQuery(group)

    async with OffsetReader(kafka_bootstrap) as reader:
        result = await reader.read(queries=[named, every])

    expected = (
        PartitionOffsets(topic, 0, committed=5, end=10, start=0),
        PartitionOffsets(topic, 1, committed=None, end=10, start=0),
        PartitionOffsets(topic, 2, committed=None, end=10, start=0),
    )
    assert result == {named: expected, every: expected}


async def test_a_group_naming_a_missing_topic_gets_an_error_and_the_other_groups_of_the_read_do_not(
    kafka_bootstrap: str,
) -> None:
    topic, missing = unique("present"), unique("missing")
    good, bad, mixed = unique("group"), unique("group"), unique("group")
    await create_topic(kafka_bootstrap, topic, 2)
    await produce(kafka_bootstrap, topic, 10, partitions=2)
    for group in (good, mixed):
        await commit(kafka_bootstrap, group, topic, {0: 2, 1: 3})
    queries = [GroupQuery(good, (topic,)), GroupQuery(bad, (missing,)), GroupQuery(mixed, (topic, missing))]

    async with OffsetReader(kafka_bootstrap) as reader:
        result = await reader.read(queries=queries)

    assert [(r.partition, r.committed, r.end) for r in offsets_of(result[queries[0]])] == [
        (0, 2, 5),
        (1, 3, 5),
    ]
    for query in queries[1:]:
        error = result[query]
        assert isinstance(error, GroupError)
        assert error.group == query.group
        assert f"topic {missing!r} does not exist" in str(error)
    assert missing not in await list_topics(kafka_bootstrap), "reading must never create a topic"


async def test_deleted_records_move_the_log_start_offset_that_the_reader_returns(
    kafka_bootstrap: str,
) -> None:
    topic, group = unique("retention"), unique("group")
    await create_topic(kafka_bootstrap, topic, 2)
    await produce(kafka_bootstrap, topic, 100, partitions=2)
    await commit(kafka_bootstrap, group, topic, {0: 10, 1: 10})
    query = GroupQuery(group, (topic,))

    async with OffsetReader(kafka_bootstrap) as reader:
        before = offsets_of((await reader.read(queries=[query]))[query])
        low = await delete_records(kafka_bootstrap, topic, {0: 30})
        after = offsets_of((await reader.read(queries=[query]))[query])

    assert low == {0: 30}
    assert [(r.start, r.end, r.committed) for r in before] == [(0, 50, 10), (0, 50, 10)]
    assert [(r.start, r.end, r.committed) for r in after] == [(30, 50, 10), (0, 50, 10)]


async def test_an_unreachable_broker_raises_kafka_unavailable_quickly() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with OffsetReader("127.0.0.1:1") as reader:
        with pytest.raises(KafkaUnavailable, match=r"127\.0\.0\.1:1"):
            await reader.read(queries=[GroupQuery("any-group", ("any-topic",))])
    assert loop.time() - started < 2.0
    assert reader.requests_by_api == {"Metadata": 3}


async def test_a_stale_cached_coordinator_and_leader_are_replaced_within_one_read(
    kafka_bootstrap: str,
) -> None:
    topic, group = unique("stale"), unique("group")
    await create_topic(kafka_bootstrap, topic, 2)
    await produce(kafka_bootstrap, topic, 10, partitions=2)
    await commit(kafka_bootstrap, group, topic, {0: 1, 1: 1})
    query = GroupQuery(group, (topic,))

    async with OffsetReader(kafka_bootstrap) as reader:
        first = await reader.read(queries=[query])
        # Pretend the coordinator and the partition leader moved to a broker that is gone.
        reader._cache.coordinators[group] = 999
        reader._cache.topics[topic] = dataclasses.replace(
            reader._cache.topics[topic], leaders={0: 999, 1: 999}
        )
        reader.requests_by_api.clear()
        second = await reader.read(queries=[query])
        requests = dict(reader.requests_by_api)

    assert second == first
    assert requests == {"OffsetFetch": 2, "FindCoordinator": 1, "ListOffsets": 4, "Metadata": 1}


async def test_a_pool_reads_each_cluster_and_isolates_the_unreachable_one(kafka_bootstrap: str) -> None:
    topic, group = unique("pool"), unique("group")
    await create_topic(kafka_bootstrap, topic, 1)
    await produce(kafka_bootstrap, topic, 5, partitions=1)
    await commit(kafka_bootstrap, group, topic, {0: 4})
    query = GroupQuery(group, (topic,))
    registry = CollectorRegistry()

    async with ReaderPool(registry=registry) as pool:
        assert pool.reader(kafka_bootstrap) is pool.reader(kafka_bootstrap)
        result = await pool.read_all(queries={kafka_bootstrap: [query], "127.0.0.1:1": [query]})
        await pool.retain([kafka_bootstrap])
        again = await pool.read(connection=kafka_bootstrap, queries=[query])

    good = result[kafka_bootstrap]
    assert not isinstance(good, KafkaError)
    assert good[query] == (PartitionOffsets(topic, 0, committed=4, end=5, start=0),)
    assert isinstance(result["127.0.0.1:1"], KafkaUnavailable)
    assert again == good
    assert registry.get_sample_value("queue_autoscaler_kafka_requests_total", {"api": "OffsetFetch"}) == 2


async def test_describe_lag_gives_the_rows_of_the_lag_command(kafka_bootstrap: str) -> None:
    topic, group = unique("describe"), unique("group")
    await create_topic(kafka_bootstrap, topic, 2)
    await produce(kafka_bootstrap, topic, 20, partitions=2)
    await commit(kafka_bootstrap, group, topic, {0: 4})

    rows = await offsets.describe_lag(target=kafka_bootstrap, group=group)

    assert rows == (
        PartitionOffsets(topic, 0, committed=4, end=10, start=0),
        PartitionOffsets(topic, 1, committed=None, end=10, start=0),
    )
    assert lag_command.format_lag_table(rows).splitlines()[-1].split() == ["TOTAL", "6", "7"]
    with pytest.raises(GroupError, match="does not exist"):
        await offsets.describe_lag(target=kafka_bootstrap, group=group, topics=(unique("missing"),))
