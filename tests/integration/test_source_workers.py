"""The RabbitMQ, Redis and NATS workers as pods on the devstack: they reach the servers from their network
namespaces and drain a backlog at their bounded rate, acknowledging after the work (as our readers see it)."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from autoscaler.errors import SourceError
from autoscaler.sources import nats as nats_source
from autoscaler.sources import rabbitmq
from autoscaler.sources import redis as redis_source
from devstack import rabbitmq_server
from tests.integration.source_servers import (
    amqp_channel,
    jetstream,
    publish,
    redis_client,
    stream_with_consumer,
)
from tests.stack import Devstack, deployment, eventually, python_container, unique

pytestmark = pytest.mark.devstack


async def run_worker(api: client.ApiClient, namespace: str, module: str, args: list[str]) -> None:
    container = python_container("worker", module, args)
    await client.AppsV1Api(api).create_namespaced_deployment(
        namespace, deployment("worker", container, replicas=1)
    )


async def test_a_rabbitmq_worker_pod_drains_a_queue_and_acknowledges_every_message(
    devstack: Devstack, kube: client.ApiClient, namespace: str
) -> None:
    queue = unique("work")
    async with amqp_channel(devstack.layout) as channel:
        await publish(channel, queue, 40)
        user, password = rabbitmq_server.USERNAME, rabbitmq_server.PASSWORD
        url = f"amqp://{user}:{password}@{devstack.layout.bridge_ip}:{devstack.layout.rabbitmq_port}/"
        await run_worker(
            kube,
            namespace,
            "devstack.workers.rabbitmq_worker",
            ["--url", url, "--queue", queue, "--rate", "40"],
        )
        query = rabbitmq.QueueQuery("/", (queue,))
        async with rabbitmq.QueueReader(
            devstack.layout.rabbitmq_management_url, username=user, password=lambda: password
        ) as reader:

            async def backlog() -> object:
                return (await reader.read(queries=[query]))[query]

            seen = await eventually(
                backlog,
                lambda r: r == (rabbitmq.QueueCounts(queue, "/", 0, 0),),
                timeout=60,
                what="the worker to drain the queue",
            )
        await channel.queue_delete(queue)
    assert not isinstance(seen, SourceError)


async def test_a_redis_worker_pod_drains_a_stream_group_and_acknowledges_every_entry(
    devstack: Devstack, kube: client.ApiClient, namespace: str
) -> None:
    stream = unique("work")
    async with redis_client(devstack.layout) as redis:
        for i in range(40):
            await redis.xadd(stream, {"n": str(i)})
        await redis.xgroup_create(stream, "workers", id="0")
        await run_worker(
            kube,
            namespace,
            "devstack.workers.redis_worker",
            [
                "--url",
                devstack.layout.redis_pod_url,
                "--stream",
                stream,
                "--group",
                "workers",
                "--rate",
                "40",
            ],
        )
        query = redis_source.StreamQuery(stream, "workers")
        async with redis_source.StreamReader(devstack.layout.redis_url) as reader:

            async def backlog() -> object:
                return (await reader.read(queries=[query]))[query]

            await eventually(
                backlog,
                lambda r: r == redis_source.StreamBacklog(lag=0, pending=0),
                timeout=60,
                what="the worker to drain the stream",
            )
        await redis.delete(stream)


async def test_a_nats_worker_pod_drains_a_durable_consumer_and_acknowledges_every_message(
    devstack: Devstack, kube: client.ApiClient, namespace: str
) -> None:
    stream = unique("work").replace("-", "_")
    async with jetstream(devstack.layout) as js:
        await stream_with_consumer(js, stream, "workers")
        for i in range(40):
            await js.publish(f"{stream}.new", f"m{i}".encode())
        await run_worker(
            kube,
            namespace,
            "devstack.workers.nats_worker",
            [
                "--url",
                devstack.layout.nats_pod_url,
                "--stream",
                stream,
                "--consumer",
                "workers",
                "--rate",
                "40",
            ],
        )
        query = nats_source.ConsumerQuery(stream, "workers")
        async with nats_source.ConsumerReader(devstack.layout.nats_monitoring_url) as reader:

            async def backlog() -> object:
                return (await reader.read(queries=[query]))[query]

            await eventually(
                backlog,
                lambda r: r == nats_source.ConsumerBacklog(pending=0, ack_pending=0),
                timeout=60,
                what="the worker to drain the consumer",
            )
        await js.delete_stream(stream)
