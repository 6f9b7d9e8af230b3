"""The controller on the devstack, with real consumer processes as the worker Deployment.

A 6-partition topic, lag-per-replica 100: produce 450 → 5 replicas within two ticks; 2,000 more → capped at
6; the workers drain → the count falls after the scale-down window, and reaches 0 after scale-to-zero-after.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest
from kubernetes_asyncio import client

from autoscaler.observability.log_events import ControlLog
from tests.controller import Process, queue_autoscaler
from tests.stack import (
    Devstack,
    consume_and_commit,
    create_topic,
    deployment,
    events_of,
    eventually,
    kafka_tool_describe,
    kafka_worker,
    produce,
    spec_replicas,
    target_annotations,
    unique,
)

pytestmark = pytest.mark.devstack


def worker_deployment(
    devstack: Devstack, name: str, topic: str, group: str, *, rate: float, **annotations: str
) -> dict[str, Any]:
    container = kafka_worker(devstack, name, topic, group, rate=rate)
    notes = target_annotations(kafka_group=group, **annotations)
    return deployment(name, container, replicas=0, annotations=notes)


def decisions(process: Process, name: str) -> list[dict[str, Any]]:
    return process.logged(ControlLog.DECISION_CHANGED, deployment=name)


async def test_lag_scales_a_deployment_up_from_zero_caps_at_partitions_and_returns_to_zero(
    devstack: Devstack, kube: client.ApiClient, namespace: str, running_controller: Process
) -> None:
    apps = client.AppsV1Api(kube)
    topic, group, name = unique("orders"), unique("workers"), "worker"
    await create_topic(devstack.kafka_bootstrap, topic, 6)
    await apps.create_namespaced_deployment(
        namespace,
        worker_deployment(
            devstack,
            name,
            topic,
            group,
            rate=40,
            kafka_topics=topic,
            lag_per_replica="100",
            offset_reset_policy="earliest",
            scale_down_window="4s",
            scale_to_zero_after="8s",
        ),
    )
    await eventually(
        lambda: asyncio.sleep(0, decisions(running_controller, name)), bool, timeout=10, what="first decision"
    )

    ticks_before = await running_controller.metric("queue_autoscaler_ticks_total")
    await produce(devstack.kafka_bootstrap, topic, 450, partitions=6)
    ticks_produced = await running_controller.metric("queue_autoscaler_ticks_total")
    assert ticks_before is not None
    assert ticks_produced is not None

    await eventually(
        lambda: spec_replicas(kube, namespace, name), lambda n: n >= 5, timeout=10, what="5 replicas"
    )
    scale_ups = [d for d in decisions(running_controller, name) if d["desired"] == 5]
    assert scale_ups, running_controller.tail()
    assert scale_ups[0]["tick"] <= ticks_produced + 2  # visible lag -> the patch within two ticks
    assert scale_ups[0]["current"] == 0  # 0 -> 5 in one step, not 0 -> 1 -> 5

    await produce(devstack.kafka_bootstrap, topic, 2000, partitions=6)
    await eventually(
        lambda: spec_replicas(kube, namespace, name), lambda n: n == 6, timeout=10, what="6 replicas"
    )
    assert (
        max(d["desired"] for d in decisions(running_controller, name)) == 6
    )  # capped at the partition count

    # The six workers drain the backlog at 40 records/s each; then the window, then the idle countdown.
    await eventually(lambda: spec_replicas(kube, namespace, name), lambda n: n == 0, timeout=120, what="zero")
    seen = [d["desired"] for d in decisions(running_controller, name)]
    assert 1 in seen[seen.index(6) :], f"the count fell to 1 before 0: {seen}"
    reasons = [e["reason"] for e in await events_of(kube, namespace, name)]
    assert reasons[0] == "ActivatedFromZero"
    assert "ScaledUp" in reasons
    assert "ScaledDown" in reasons
    assert reasons[-1] == "ScaledToZero"


async def test_lag_at_or_below_activation_lag_keeps_a_deployment_at_zero(
    devstack: Devstack, kube: client.ApiClient, namespace: str, running_controller: Process
) -> None:
    apps = client.AppsV1Api(kube)
    topic, group, name = unique("quiet"), unique("workers"), "quiet"
    await create_topic(devstack.kafka_bootstrap, topic, 6)
    await apps.create_namespaced_deployment(
        namespace,
        worker_deployment(
            devstack,
            name,
            topic,
            group,
            rate=40,
            kafka_topics=topic,
            lag_per_replica="100",
            activation_lag="5",
            offset_reset_policy="earliest",
        ),
    )
    await produce(devstack.kafka_bootstrap, topic, 3, partitions=6)
    ticks = await running_controller.metric("queue_autoscaler_ticks_total")
    assert ticks is not None

    async def decided_after_produce() -> list[dict[str, Any]]:
        return [d for d in decisions(running_controller, name) if d.get("tick", 0) > ticks + 2]

    # Decision logs are written on change only; wait for three more ticks and check the last decision.
    await eventually(
        lambda: running_controller.metric("queue_autoscaler_ticks_total"),
        lambda t: t is not None and t >= ticks + 3,
        timeout=10,
        what="three ticks",
    )
    assert await spec_replicas(kube, namespace, name) == 0
    last = decisions(running_controller, name)[-1]
    assert last["desired"] == 0
    assert last["lag"] == 3
    assert not await decided_after_produce()


async def test_the_lag_command_agrees_with_kafkas_consumer_groups_tool_on_every_partition(
    devstack: Devstack,
) -> None:
    topic, group = unique("agree"), unique("group")
    await create_topic(devstack.kafka_bootstrap, topic, 6)
    await produce(devstack.kafka_bootstrap, topic, 1000, partitions=6)
    await consume_and_commit(devstack.kafka_bootstrap, topic, group, 333)

    ours = await asyncio.to_thread(
        subprocess.run,
        queue_autoscaler("lag", "--group", group, "--bootstrap", devstack.kafka_bootstrap, "--json"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    theirs = await kafka_tool_describe(devstack.kafka_bootstrap, group)
    our_rows = {
        (r["topic"], r["partition"]): (r["committed"], r["end"], r["lag"])
        for r in json.loads(ours.stdout)["partitions"]
    }
    their_rows = {key: (row.current, row.end, row.lag) for key, row in theirs.items()}
    assert len(their_rows) == 6
    assert our_rows == their_rows
