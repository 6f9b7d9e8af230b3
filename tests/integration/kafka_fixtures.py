"""The devstack Kafka broker for offset tests: its address (failing, never skipping, without it), topics,
records, commits, and Kafka's own consumer-groups tool."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

KAFKA_TOOL = Path(__file__).resolve().parents[2] / "devstack" / "kafka-consumer-groups"


async def require_broker() -> str:
    """The broker's address, for a fixture; fails the test (never skips it) when no broker answers there."""
    bootstrap = os.environ.get("QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        brokers = (await admin.describe_cluster()).get("brokers")
    except Exception as exc:  # any failure: the reason goes into the test failure
        brokers, reason = None, repr(exc)
    else:
        reason = "no broker listed"
    finally:
        await admin.close()
    if not brokers:
        pytest.fail(f"no Kafka broker answers at {bootstrap} ({reason}); start it with devstack/up")
    return bootstrap


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    errors = [error for _name, error, *_ in response.topic_errors if error]
    assert not errors, f"creating {topic}: error codes {errors}"


async def list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics: list[str] = await admin.list_topics()
    finally:
        await admin.close()
    return topics


async def produce(bootstrap: str, topic: str, count: int, *, partitions: int) -> None:
    """``count`` records, round-robin over ``partitions`` (record i goes to partition i % partitions)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"record-%d" % i, partition=i % partitions) for i in range(count)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Commits ``offsets`` (partition -> offset) for ``group`` as a consumer of assigned partitions does."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): offset for p, offset in offsets.items()})
    finally:
        await consumer.stop()


async def delete_records(bootstrap: str, topic: str, before: Mapping[int, int]) -> dict[int, int]:
    """Deletes records below ``before[partition]``; returns the new log start offset per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        low = await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(offset) for p, offset in before.items()}
        )
    finally:
        await admin.close()
    return {tp.partition: offset for tp, offset in low.items()}


@dataclass(frozen=True)
class ToolRow:
    current: int
    end: int
    lag: int


async def kafka_tool_describe(bootstrap: str, group: str) -> dict[tuple[str, int], ToolRow]:
    """``kafka-consumer-groups --describe --group``, per (topic, partition) with a committed offset."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(KAFKA_TOOL), "--bootstrap-server", bootstrap, "--describe", "--group", group],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kafka-consumer-groups failed: {done.stderr}"
    rows: dict[tuple[str, int], ToolRow] = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == group and fields[2].isdigit():
            rows[(fields[1], int(fields[2]))] = ToolRow(int(fields[3]), int(fields[4]), int(fields[5]))
    return rows
