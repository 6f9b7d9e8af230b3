"""``queue-autoscaler lag`` for the other sources prints what their servers' own answers say."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest

from devstack import rabbitmq_server
from tests.controller import queue_autoscaler
from tests.integration.source_servers import (
    amqp_channel,
    jetstream,
    jsz_consumer,
    publish,
    rabbitmqctl_queues,
    redis_cli_groups,
    redis_client,
    stream_with_consumer,
    take_without_ack,
)
from tests.stack import Devstack, unique

pytestmark = pytest.mark.devstack


async def lag(*args: str) -> dict[str, Any]:
    done = await asyncio.to_thread(
        subprocess.run,
        queue_autoscaler("lag", *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


async def test_the_lag_command_prints_rabbitmq_redis_and_nats_figures_equal_to_the_servers_tools(
    devstack: Devstack,
) -> None:
    layout = devstack.layout
    queue, stream, js_stream = unique("lagcmd"), unique("lagcmd"), unique("lagcmd").replace("-", "_")
    async with amqp_channel(layout) as channel, redis_client(layout) as redis, jetstream(layout) as js:
        await publish(channel, queue, 9)
        await take_without_ack(channel, queue, 4)
        for i in range(7):
            await redis.xadd(stream, {"n": str(i)})
        await redis.xgroup_create(stream, "workers", id="0")
        await redis.xreadgroup("workers", "w", {stream: ">"}, count=2)
        await stream_with_consumer(js, js_stream, "workers")
        for i in range(6):
            await js.publish(f"{js_stream}.new", f"m{i}".encode())

        answer = await lag(
            "--rabbitmq-queues", queue,
            "--rabbitmq-management-url", layout.rabbitmq_management_url,
            "--rabbitmq-username", rabbitmq_server.USERNAME,
            "--rabbitmq-password-file", rabbitmq_server.password_file(layout),
            "--redis-stream", stream, "--redis-group", "workers", "--redis-url", layout.redis_url,
            "--nats-stream", js_stream, "--nats-consumer", "workers",
            "--nats-monitoring-url", layout.nats_monitoring_url,
        )  # fmt: skip
        tool_queues = await rabbitmqctl_queues(layout)
        tool_groups = await redis_cli_groups(layout, stream)
        tool_consumer = await jsz_consumer(layout, js_stream, "workers")
        await channel.queue_delete(queue)
        await redis.delete(stream)
        await js.delete_stream(js_stream)

    assert answer["rabbitmq"] == [{"queue": queue, "vhost": "/", "ready": 5, "unacked": 4}]
    assert tool_queues[queue] == (5, 4)
    group = tool_groups["workers"]
    assert answer["redis"] == {"lag": int(group["lag"]), "pending": int(group["pending"]), "length": 7}
    assert answer["nats"] == {
        "pending": tool_consumer["num_pending"],
        "ack_pending": tool_consumer["num_ack_pending"],
    }
    assert answer["nats"] == {"pending": 6, "ack_pending": 0}
