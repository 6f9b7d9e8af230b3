"""Helpers for tests on the devstack's RabbitMQ, Redis and NATS: clients, publishing, their own tools."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import nats
import redis.asyncio as aioredis
from nats.js.api import AckPolicy, ConsumerConfig

from devstack import nats_server, rabbitmq_server, redis_server
from devstack.config import Layout


def rabbitmq_amqp_url(layout: Layout) -> str:
    user, password = rabbitmq_server.USERNAME, rabbitmq_server.PASSWORD
    return f"amqp://{user}:{password}@127.0.0.1:{layout.rabbitmq_port}/"


@asynccontextmanager
async def amqp_channel(layout: Layout) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(rabbitmq_amqp_url(layout))
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def publish(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> None:
    await channel.declare_queue(queue, durable=False, auto_delete=False)
    for i in range(count):
        await channel.default_exchange.publish(aio_pika.Message(f"m{i}".encode()), routing_key=queue)


async def take_without_ack(
    channel: aio_pika.abc.AbstractChannel, queue: str, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Receives ``count`` messages and keeps them unacknowledged (as a busy worker does)."""
    declared = await channel.declare_queue(queue, passive=True)
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    while len(taken) < count:
        message = await declared.get(no_ack=False, fail=False, timeout=5)
        if message is not None:
            taken.append(message)
    return taken


async def rabbitmqctl_queues(layout: Layout) -> dict[str, tuple[int, int]]:
    """``rabbitmqctl list_queues name messages_ready messages_unacknowledged``: name -> (ready, unacked)."""
    done = await asyncio.to_thread(
        rabbitmq_server.rabbitmqctl,
        layout,
        "list_queues",
        "--no-table-headers",
        "--quiet",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    )
    assert done.returncode == 0, done.stderr
    rows: dict[str, tuple[int, int]] = {}
    for line in done.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            rows[fields[0]] = (int(fields[1]), int(fields[2]))
    return rows


@asynccontextmanager
async def redis_client(layout: Layout) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(layout.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def redis_cli_groups(layout: Layout, stream: str) -> dict[str, dict[str, str]]:
    """``redis-cli XINFO GROUPS stream``: group name -> field -> value as the tool prints it."""
    done = await asyncio.to_thread(redis_server.redis_cli, layout, "--no-raw", "XINFO", "GROUPS", stream)
    assert done.returncode == 0, done.stderr
    groups: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    values = [_cli_value(line) for line in done.stdout.splitlines() if line.strip()]
    for key, value in zip(values[0::2], values[1::2], strict=True):
        if key == "name":
            current = {}
            groups[value] = current
        current[key] = value
    return groups


def _cli_value(line: str) -> str:
    """One line of redis-cli's --no-raw output, e.g. ``2) (integer) 7`` or ``   1) "name"`` -> its value."""
    text = re.sub(r"^(\s*\d+\)\s+)+", "", line).strip().removeprefix("(integer) ")
    return "nil" if text == "(nil)" else text.strip('"')


@asynccontextmanager
async def jetstream(layout: Layout) -> AsyncIterator[nats.js.JetStreamContext]:
    client = await nats.connect(layout.nats_url)
    try:
        yield client.jetstream()
    finally:
        await client.close()


async def stream_with_consumer(js: nats.js.JetStreamContext, stream: str, consumer: str) -> None:
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    await js.add_consumer(
        stream, ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT, ack_wait=300)
    )


async def jsz_consumer(layout: Layout, stream: str, consumer: str) -> dict[str, object]:
    """The consumer's entry in the server's own /jsz answer."""
    answer = await asyncio.to_thread(nats_server.jsz, layout)
    for account in answer.get("account_details") or []:  # type: ignore[attr-defined]
        for detail in account.get("stream_detail") or []:
            if detail["name"] == stream:
                for entry in detail.get("consumer_detail") or []:
                    if entry["name"] == consumer:
                        return dict(entry)
    raise AssertionError(
        f"/jsz has no consumer {consumer!r} on stream {stream!r}: {json.dumps(answer)[:500]}"
    )
