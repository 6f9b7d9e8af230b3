"""Two dispatcher replicas sharing a Trigger's partitions (Kafka's group assignment), on the devstack's Kafka
and API server: both deliver, and when one is SIGKILLed the survivor takes every partition and every event
is still delivered. Event ids are compared; duplicates (at least once) are printed with ``-s``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from autoscaler.observability.log_events import EventingLog
from devstack.eventing_harness import (
    BILLING,
    Broker,
    another_dispatcher,
    broker_processes,
    install_crds,
    logged_port,
    subscriber,
)
from devstack.kube_rest import Rest
from devstack.processes import Process, parse_metric
from tests.e2e.test_eventing_delivery import delivered, fast_beside_slow, post_all
from tests.integration.test_eventing_broker import kustomize, new_id, rest
from tests.stack import Devstack, eventually

__all__ = ["kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack

PARTITIONS = 4


@pytest.fixture
async def broker(
    devstack: Devstack, kube: client.ApiClient, namespace: str, kustomize: Path, rest: Rest, tmp_path: Path
) -> AsyncIterator[Broker]:
    await install_crds(kustomize, rest)
    async with broker_processes(devstack, kube, namespace, tmp_path, partitions=PARTITIONS) as running_broker:
        yield running_broker


@pytest.fixture
async def second(broker: Broker) -> AsyncIterator[Process]:
    replica = await another_dispatcher(broker, "dispatcher-2")
    try:
        yield replica
    finally:
        replica.stop()


async def sample(process: Process, name: str, labels: dict[str, str]) -> float:
    """One sample of a dispatcher's metrics (0 when the series is absent)."""
    port = logged_port(process, EventingLog.DISPATCHER_STARTED, "metrics_port")
    assert port is not None
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return parse_metric(text, name, labels) or 0.0


async def held(broker: Broker, replicas: Sequence[Process], trigger: str) -> list[float]:
    labels = {"namespace": broker.namespace, "trigger": trigger}
    return [await sample(p, "queue_autoscaler_dispatcher_partitions", labels) for p in replicas]


async def delivered_by(broker: Broker, replica: Process, trigger: str) -> float:
    labels = {"namespace": broker.namespace, "trigger": trigger, "result": "delivered"}
    return await sample(replica, "queue_autoscaler_trigger_events_total", labels)


async def shared(broker: Broker, replicas: Sequence[Process], trigger: str) -> None:
    """Waits until every replica holds some of the topic's partitions and together they hold all."""
    await eventually(
        lambda: held(broker, replicas, trigger),
        lambda counts: all(n > 0 for n in counts) and sum(counts) == PARTITIONS,
        timeout=120,
        interval=0.5,
        what=f"the partitions of Trigger {trigger} shared by {len(replicas)} dispatchers",
    )


async def test_two_dispatchers_share_a_triggers_partitions_and_the_survivor_of_a_sigkill_delivers_every_event(
    broker: Broker, second: Process
) -> None:
    replicas = (broker.dispatcher, second)
    async with subscriber() as sink:
        sink.delay = 0.005
        await broker.trigger("shared", {"subscriber": {"uri": sink.url}})
        await broker.ready_trigger("shared")
        await shared(broker, replicas, "shared")

        first_batch = [(new_id(), BILLING) for _ in range(4000)]
        await post_all(broker, first_batch)
        await eventually(
            lambda: delivered(sink.ids()),
            lambda ids: ids >= {i for i, _ in first_batch},
            timeout=180,
            interval=0.5,
            what="every event of the first batch",
        )
        counts = [await delivered_by(broker, p, "shared") for p in replicas]
        assignments = [
            [e["partitions"] for e in p.logged(EventingLog.PARTITIONS_ASSIGNED, trigger="shared")]
            for p in replicas
        ]
        assert all(n > 0 for n in counts), counts
        assert all(any(a) for a in assignments), assignments
        first_duplicates = len(sink.ids()) - len(set(sink.ids()))

        second_batch = [(new_id(), BILLING) for _ in range(4000)]
        want = {i for i, _ in second_batch}
        posting = asyncio.create_task(post_all(broker, second_batch))
        try:
            await eventually(
                lambda: delivered(sink.ids()),
                lambda ids: len(ids & want) >= 300,
                timeout=120,
                interval=0.05,
                what="some of the second batch delivered",
            )
            second.kill()
            at_kill = len(set(sink.ids()) & want)
            await posting
        finally:
            if not posting.done():
                posting.cancel()
                await asyncio.gather(posting, return_exceptions=True)
        await eventually(
            lambda: delivered(sink.ids()),
            lambda ids: ids >= want,
            timeout=180,
            interval=0.5,
            what="every event of the second batch, by the surviving dispatcher",
        )
        survivor_holds = await held(broker, [broker.dispatcher], "shared")
    everything = {i for i, _ in first_batch} | want
    assert set(sink.ids()) == everything
    assert survivor_holds == [PARTITIONS]
    duplicates = len(sink.ids()) - len(everything)
    print(
        f"\nfirst batch: delivered {counts[0]:.0f} + {counts[1]:.0f} by the two dispatchers "
        f"(assignments {assignments}), {first_duplicates} duplicates; second batch: one killed after "
        f"{at_kill} of 4000, the survivor took all {PARTITIONS} partitions; duplicates in all: {duplicates}"
    )


async def test_with_two_dispatchers_a_slow_trigger_does_not_delay_another_triggers_deliveries(
    broker: Broker, second: Process
) -> None:
    replicas = (broker.dispatcher, second)

    async def both_shared() -> None:
        await shared(broker, replicas, "slow")
        await shared(broker, replicas, "fast")

    slow_so_far = await fast_beside_slow(broker, events=600, slow_delay=5.0, when_ready=both_shared)
    # 2 replicas x 100 in flight, 5 s each: the slow subscriber cannot have answered all 600 yet.
    assert slow_so_far < 600
    print(f"\nfast Trigger delivered 600 over two dispatchers while the slow one had answered {slow_so_far}")
