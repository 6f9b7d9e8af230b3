"""Where ``bench.load`` sends besides Kafka: a RabbitMQ queue, a Redis stream or a NATS JetStream subject.

A Sink takes one tick's records at once and answers how many the server acknowledged (publisher confirms,
XADD replies, JetStream acks); a record's headers are ignored by all three.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol

import aio_pika
import nats
import redis.asyncio as aioredis

SinkKind = Literal["kafka", "rabbitmq", "redis", "nats"]
SINKS: tuple[SinkKind, ...] = ("kafka", "rabbitmq", "redis", "nats")
DEFAULT_URLS: dict[str, str] = {
    "rabbitmq": "amqp://queue-autoscaler:devstack@127.0.0.1:19672/",
    "redis": "redis://127.0.0.1:19379/0",
    "nats": "nats://127.0.0.1:19422",
}


class Sink(Protocol):
    async def send_batch(self, values: Sequence[bytes]) -> int:
        """Sends every value; returns how many the server acknowledged."""
        ...

    async def close(self) -> None: ...


class RabbitMQSink:
    """Publishes to ``queue`` (declared when missing) through the default exchange, with confirms."""

    def __init__(self, url: str, queue: str) -> None:
        self._url, self._queue = url, queue
        self._connection: Any = None
        self._exchange: Any = None

    async def open(self) -> RabbitMQSink:
        self._connection = await aio_pika.connect(self._url)
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.declare_queue(self._queue, durable=True)
        self._exchange = channel.default_exchange
        return self

    async def send_batch(self, values: Sequence[bytes]) -> int:
        outcomes = await asyncio.gather(
            *(self._exchange.publish(aio_pika.Message(v), routing_key=self._queue) for v in values),
            return_exceptions=True,
        )
        return sum(not isinstance(o, BaseException) for o in outcomes)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class RedisSink:
    """XADDs to ``stream`` in one pipelined round trip per batch."""

    def __init__(self, url: str, stream: str) -> None:
        self._stream = stream
        self._client = aioredis.Redis.from_url(url)

    async def send_batch(self, values: Sequence[bytes]) -> int:
        pipe = self._client.pipeline(transaction=False)
        for value in values:
            pipe.xadd(self._stream, {"data": value})
        replies = await pipe.execute(raise_on_error=False)
        return sum(not isinstance(r, BaseException) for r in replies)

    async def close(self) -> None:
        await self._client.aclose()


class NatsSink:
    """Publishes to JetStream subject ``subject`` (a stream must capture it), awaiting every ack."""

    def __init__(self, url: str, subject: str) -> None:
        self._url, self._subject = url, subject
        self._client: Any = None

    async def open(self) -> NatsSink:
        self._client = await nats.connect(self._url)
        return self

    async def send_batch(self, values: Sequence[bytes]) -> int:
        js = self._client.jetstream()
        outcomes = await asyncio.gather(
            *(js.publish(self._subject, v) for v in values), return_exceptions=True
        )
        return sum(not isinstance(o, BaseException) for o in outcomes)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


async def open_sink(kind: SinkKind, *, name: str, url: str | None = None) -> Sink:
    """The sink for ``kind`` (not kafka), sending to queue / stream / subject ``name``."""
    where = url or DEFAULT_URLS[kind]
    if kind == "rabbitmq":
        return await RabbitMQSink(where, name).open()
    if kind == "redis":
        return RedisSink(where, name)
    if kind == "nats":
        return await NatsSink(where, name).open()
    raise ValueError(f"no sink for {kind!r}: one of rabbitmq, redis, nats")


@asynccontextmanager
async def opened(kind: SinkKind, *, name: str, url: str | None = None) -> AsyncIterator[Sink]:
    """``async with opened(kind, name=..., url=...) as sink``: opens and closes a sink."""
    sink = await open_sink(kind, name=name, url=url)
    try:
        yield sink
    finally:
        await sink.close()
