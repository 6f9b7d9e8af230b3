"""The controller process on the devstack's RabbitMQ, Redis and NATS, with real worker pods: a backlog of
45 at 10 per replica takes the Deployment 0 -> 5 in one patch within two ticks, the workers drain it, and
after the window and the idle countdown it returns to 0. A queue deleted mid-run holds, with one Event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from autoscaler.observability.log_events import ControlLog
from devstack import rabbitmq_server
from tests.controller import Process, controller
from tests.integration.source_servers import (
    amqp_channel,
    jetstream,
    publish,
    redis_client,
    stream_with_consumer,
)
from tests.stack import (
    Devstack,
    deployment,
    events_of,
    eventually,
    python_container,
    spec_replicas,
    target_annotations,
    unique,
)

pytestmark = pytest.mark.devstack

BACKLOG, PER_REPLICA = 45, 10
TIMINGS = {"scale_down_window": "4s", "scale_to_zero_after": "8s"}


@pytest.fixture
async def source_controller(devstack: Devstack, namespace: str, tmp_path: Path) -> AsyncIterator[Process]:
    """A controller whose connections file names the devstack's RabbitMQ, Redis and NATS as ``default``."""
    layout = devstack.layout
    path = tmp_path / "connections.json"
    path.write_text(
        json.dumps(
            {
                "rabbitmq": {
                    "default": {
                        "management-url": layout.rabbitmq_management_url,
                        "username": rabbitmq_server.USERNAME,
                        "password-file": rabbitmq_server.password_file(layout),
                    }
                },
                "redis": {"default": {"url": layout.redis_url}},
                "nats": {"default": {"monitoring-url": layout.nats_monitoring_url, "account": "$G"}},
            }
        )
    )
    process = controller(
        devstack, tmp_path / "controller.log", namespaces=[namespace], extra=["--connections", str(path)]
    ).start()
    try:
        await process.wait_port("metrics")
        yield process
    finally:
        process.stop()


@dataclass
class Case:
    """One source: its annotations, its worker's container, and how to make its backlog."""

    source: str
    annotations: dict[str, str]
    container: dict[str, Any]
    produce: Callable[[int], Awaitable[None]]


async def run_lifecycle(kube: client.ApiClient, namespace: str, process: Process, case: Case) -> None:
    name = "worker"
    notes = target_annotations(**case.annotations, **TIMINGS)
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment(name, case.container, replicas=0, annotations=notes)
    )

    def decided() -> list[dict[str, Any]]:
        return process.logged(ControlLog.DECISION_CHANGED, deployment=name)

    await eventually(lambda: asyncio.sleep(0, decided()), bool, timeout=15, what="a first decision")
    await case.produce(BACKLOG)
    ticks_produced = await process.metric("queue_autoscaler_ticks_total")
    assert ticks_produced is not None

    await eventually(lambda: spec_replicas(kube, namespace, name), lambda n: n >= 5, timeout=30, what="5")
    ups = [d for d in decided() if d["desired"] == 5]
    assert ups, process.tail()
    assert ups[0]["current"] == 0  # 0 -> ceil(45 / 10) in one patch
    assert ups[0]["tick"] <= ticks_produced + 2
    assert ups[0]["source"] == case.source  # the log names the source that drove the change

    await eventually(lambda: spec_replicas(kube, namespace, name), lambda n: n == 0, timeout=90, what="zero")

    async def reasons_now() -> list[str]:
        return [e["reason"] for e in await events_of(kube, namespace, name)]

    # The ScaledToZero Event follows the patch to zero just seen: read until it is there.
    reasons = await eventually(
        reasons_now, lambda found: found[-1:] == ["ScaledToZero"], timeout=10, what="the ScaledToZero Event"
    )
    assert reasons[0] == "ActivatedFromZero"
    assert "LagUnavailable" not in reasons


async def test_a_rabbitmq_backlog_scales_from_zero_in_one_patch_drains_and_returns_to_zero(
    devstack: Devstack, kube: client.ApiClient, namespace: str, source_controller: Process
) -> None:
    queue = unique("work")
    layout = devstack.layout
    url = f"amqp://{rabbitmq_server.USERNAME}:{rabbitmq_server.PASSWORD}@{layout.bridge_ip}:{layout.rabbitmq_port}/"
    async with amqp_channel(layout) as channel:
        await publish(channel, queue, 0)

        async def produce(count: int) -> None:
            await publish(channel, queue, count)

        case = Case(
            "rabbitmq",
            {"rabbitmq_queues": queue, "messages_per_replica": str(PER_REPLICA)},
            python_container(
                "worker", "devstack.workers.rabbitmq_worker", ["--url", url, "--queue", queue, "--rate", "5"]
            ),
            produce,
        )
        await run_lifecycle(kube, namespace, source_controller, case)
        await channel.queue_delete(queue)


async def test_a_redis_stream_backlog_scales_from_zero_in_one_patch_drains_and_returns_to_zero(
    devstack: Devstack, kube: client.ApiClient, namespace: str, source_controller: Process
) -> None:
    stream = unique("work")
    async with redis_client(devstack.layout) as redis:
        await redis.xgroup_create(stream, "workers", id="0", mkstream=True)

        async def produce(count: int) -> None:
            for i in range(count):
                await redis.xadd(stream, {"n": str(i)})

        case = Case(
            "redis",
            {"redis_stream": stream, "redis_group": "workers", "entries_per_replica": str(PER_REPLICA)},
            python_container(
                "worker",
                "devstack.workers.redis_worker",
                [
                    "--url",
                    devstack.layout.redis_pod_url,
                    "--stream",
                    stream,
                    "--group",
                    "workers",
                    "--rate",
                    "5",
                ],
            ),
            produce,
        )
        await run_lifecycle(kube, namespace, source_controller, case)
        await redis.delete(stream)


async def test_a_nats_consumer_backlog_scales_from_zero_in_one_patch_drains_and_returns_to_zero(
    devstack: Devstack, kube: client.ApiClient, namespace: str, source_controller: Process
) -> None:
    stream = unique("work").replace("-", "_")
    async with jetstream(devstack.layout) as js:
        await stream_with_consumer(js, stream, "workers")

        async def produce(count: int) -> None:
            for i in range(count):
                await js.publish(f"{stream}.new", f"m{i}".encode())

        case = Case(
            "nats",
            {"nats_stream": stream, "nats_consumer": "workers", "pending_per_replica": str(PER_REPLICA)},
            python_container(
                "worker",
                "devstack.workers.nats_worker",
                [
                    "--url",
                    devstack.layout.nats_pod_url,
                    "--stream",
                    stream,
                    "--consumer",
                    "workers",
                    "--rate",
                    "5",
                ],
            ),
            produce,
        )
        await run_lifecycle(kube, namespace, source_controller, case)
        await js.delete_stream(stream)


async def test_a_rabbitmq_queue_deleted_mid_run_holds_the_replicas_with_one_warning_event(
    devstack: Devstack, kube: client.ApiClient, namespace: str, source_controller: Process
) -> None:
    queue, name = unique("gone"), "worker"
    async with amqp_channel(devstack.layout) as channel:
        await publish(channel, queue, 30)
        notes = target_annotations(rabbitmq_queues=queue, messages_per_replica="10", **TIMINGS)
        idle = python_container("worker", "devstack.workers.http_worker", ["--port", "8080"])
        await client.AppsV1Api(kube).create_namespaced_deployment(
            namespace, deployment(name, idle, replicas=0, annotations=notes)
        )
        await eventually(lambda: spec_replicas(kube, namespace, name), lambda n: n == 3, timeout=15, what="3")
        await channel.queue_delete(queue)

    ticks_deleted = await source_controller.metric("queue_autoscaler_ticks_total")
    assert ticks_deleted is not None
    # Well past the window and the idle countdown: a deleted queue is missing data, not an empty queue.
    await eventually(
        lambda: source_controller.metric("queue_autoscaler_ticks_total"),
        lambda t: t is not None and t >= ticks_deleted + 14,
        timeout=30,
        what="14 more ticks",
    )
    assert await spec_replicas(kube, namespace, name) == 3
    warnings = [e for e in await events_of(kube, namespace, name) if e["reason"] == "LagUnavailable"]
    assert len(warnings) == 1, warnings
    assert "does not exist" in warnings[0]["note"]
