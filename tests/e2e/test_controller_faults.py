"""The real controller process on the devstack under faults: a Kafka outage, a SIGKILL during the idle
countdown, a bad annotation and a Deployment deleted while it is being scaled.

Each test runs ``queue-autoscaler run`` as a process watching its own namespace, and checks what users see:
``spec.replicas``, the Events the controller records and its JSON log.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from autoscaler.observability.log_events import ControlLog
from devstack import kafka as broker
from tests.controller import Process, controller
from tests.stack import (
    Devstack,
    commit,
    create_topic,
    deployment,
    event_reasons_become,
    events_of,
    eventually,
    kafka_worker,
    produce,
    python_container,
    spec_replicas,
    target_annotations,
    unique,
)

pytestmark = pytest.mark.devstack
PREFIX = "queue-autoscaler.dev/"
LAST_ACTIVE = PREFIX + "last-active"


def sleeper(name: str) -> dict[str, Any]:
    """A container that consumes nothing, so the lag stays exactly what the test produced."""
    container = python_container(name, "time", [])
    container["command"] = [container["command"][0], "-c", "import time; time.sleep(3600)"]
    container["args"] = []
    return container


async def annotations_of(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    found = await client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    return dict(found.metadata.annotations or {})


def logged_at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["timestamp"])


async def ticks(process: Process) -> float:
    value = await process.metric("queue_autoscaler_ticks_total")
    assert value is not None, process.tail()
    return value


async def wait_ticks(process: Process, count: int) -> None:
    """Waits until the controller has run ``count`` more ticks (its own counter, not a sleep)."""
    start = await ticks(process)
    await eventually(
        lambda: ticks(process), lambda t: t >= start + count, timeout=10 + 2 * count, what=f"{count} ticks"
    )


async def reasons(api: client.ApiClient, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in await events_of(api, namespace, name) if e["reason"] == reason]


async def get_status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


def problems_logged(process: Process) -> list[dict[str, Any]]:
    return [e for e in process.logs() if e.get("level") in ("error", "critical") or "exception" in e]


async def test_a_kafka_outage_holds_the_replicas_with_one_warning_and_decisions_resume_when_it_returns(
    devstack: Devstack, kube: client.ApiClient, namespace: str, running_controller: Process
) -> None:
    apps = client.AppsV1Api(kube)
    topic, group, name = unique("outage"), unique("workers"), "worker"
    await create_topic(devstack.kafka_bootstrap, topic, 6)
    await produce(devstack.kafka_bootstrap, topic, 290, partitions=6)
    notes = target_annotations(
        kafka_group=group,
        kafka_topics=topic,
        lag_per_replica="100",
        offset_reset_policy="earliest",
        scale_down_window="10m",
    )
    # One record per second per worker: the backlog outlasts the test, so the 3 replicas stay wanted.
    container = kafka_worker(devstack, name, topic, group, rate=1)
    await apps.create_namespaced_deployment(
        namespace, deployment(name, container, replicas=0, annotations=notes)
    )
    await eventually(
        lambda: spec_replicas(kube, namespace, name), lambda n: n == 3, timeout=30, what="3 replicas"
    )

    layout = devstack.layout
    try:
        await asyncio.to_thread(broker.stop, layout)
        await eventually(
            lambda: reasons(kube, namespace, name, "LagUnavailable"),
            bool,
            timeout=20,
            what="a LagUnavailable event",
        )
        await wait_ticks(running_controller, 4)
        held = await spec_replicas(kube, namespace, name)
        during = running_controller.logged(ControlLog.DECISION_CHANGED, deployment=name)
        warnings = await reasons(kube, namespace, name, "LagUnavailable")
    finally:
        # Others share the broker: bring it back whatever happened above.
        await asyncio.to_thread(broker.resume, layout)
        await asyncio.to_thread(broker.wait_ready, layout, timeout=120)

    assert held == 3, running_controller.tail()
    assert during[-1]["rule"] == "hold-unreadable", during[-1]
    assert during[-1]["desired"] == 3
    assert len(warnings) == 1, warnings
    assert warnings[0]["type"] == "Warning"
    assert "cannot be read" in warnings[0]["note"]

    readable = await eventually(
        lambda: asyncio.sleep(0, running_controller.logged(ControlLog.LAG_RECOVERED, deployment=name)),
        bool,
        timeout=60,
        what="the lag to be readable again",
    )
    since = logged_at(readable[0])
    after = await eventually(
        lambda: asyncio.sleep(
            0,
            [
                d
                for d in running_controller.logged(ControlLog.DECISION_CHANGED, deployment=name)
                if logged_at(d) >= since
            ],
        ),
        bool,
        timeout=10,
        what="a decision on readable lag",
    )
    assert after[0]["kafka_error"] is None
    assert after[0]["rule"] != "hold-unreadable"
    assert after[0]["lag"] > 0
    assert len(await reasons(kube, namespace, name, "LagUnavailable")) == 1
    running_controller.assert_alive()


async def test_a_controller_killed_during_the_idle_countdown_scales_to_zero_on_the_original_schedule(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    apps = client.AppsV1Api(kube)
    topic, group, name = unique("idle"), unique("workers"), "idle"
    await create_topic(devstack.kafka_bootstrap, topic, 1)
    await produce(devstack.kafka_bootstrap, topic, 5, partitions=1)
    notes = target_annotations(
        kafka_group=group,
        kafka_topics=topic,
        lag_per_replica="10",
        offset_reset_policy="earliest",
        scale_to_zero_after="10s",
        scale_down_window="0s",
    )
    await apps.create_namespaced_deployment(
        namespace, deployment(name, sleeper(name), replicas=1, annotations=notes)
    )
    first = controller(devstack, tmp_path / "first.log", namespaces=[namespace], identity="first").start()
    second = controller(devstack, tmp_path / "second.log", namespaces=[namespace], identity="second")
    try:
        await eventually(
            lambda: asyncio.sleep(0, first.logged(ControlLog.DECISION_CHANGED, deployment=name)),
            bool,
            timeout=30,
            what="a decision",
        )
        assert first.logged(ControlLog.DECISION_CHANGED, deployment=name)[0]["lag"] == 5
        assert LAST_ACTIVE not in await annotations_of(kube, namespace, name)

        await commit(devstack.kafka_bootstrap, group, topic, {0: 5})  # the work is done: the target idles
        written = await eventually(
            lambda: annotations_of(kube, namespace, name),
            lambda notes: LAST_ACTIVE in notes,
            timeout=10,
            what="the last-active annotation",
        )
        last_active = datetime.fromisoformat(written[LAST_ACTIVE])
        due = last_active + timedelta(seconds=10)

        # SIGKILL 4 s into the 10 s countdown: nothing is flushed, only the annotation survives.
        await asyncio.sleep(
            max(0.0, (last_active + timedelta(seconds=4) - datetime.now(last_active.tzinfo)).total_seconds())
        )
        first.kill()
        assert await spec_replicas(kube, namespace, name) == 1
        assert not first.logged(ControlLog.TARGET_SCALED, deployment=name)

        second.start()
        await eventually(
            lambda: spec_replicas(kube, namespace, name), lambda n: n == 0, timeout=30, what="zero replicas"
        )
        scaled = await eventually(
            lambda: asyncio.sleep(0, second.logged(ControlLog.TARGET_SCALED, deployment=name)),
            bool,
            timeout=5,
            what="a scaled log",
        )
        to_zero = await eventually(
            lambda: reasons(kube, namespace, name, "ScaledToZero"), bool, timeout=10, what="ScaledToZero"
        )
    finally:
        first.stop()
        if second.proc is not None:
            second.stop()

    assert scaled[0]["replicas_to"] == 0
    assert len(to_zero) == 1
    assert to_zero[0]["reportingInstance"] == "second"
    # A semantic check of the schedule, not a speed threshold: the new process must neither restart the
    # countdown (that would land at about restart + 10 s, i.e. 4 s or more late) nor scale before it ends.
    # With a 1 s interval the first tick at or past last-active + 10 s comes up to 1 tick later, plus the
    # scale patch and the Event write (tens of ms on the devstack): ±1.5 s covers 1 tick and that latency.
    for moment in (logged_at(scaled[0]), datetime.fromisoformat(to_zero[0]["eventTime"])):
        assert abs((moment - due).total_seconds()) <= 1.5, (moment, due)


async def test_a_bad_annotation_gets_one_warning_naming_it_and_leaves_replicas_until_it_is_fixed(
    devstack: Devstack, kube: client.ApiClient, namespace: str, running_controller: Process
) -> None:
    apps = client.AppsV1Api(kube)
    topic, group, name = unique("bad"), unique("workers"), "bad"
    await create_topic(devstack.kafka_bootstrap, topic, 6)
    await produce(devstack.kafka_bootstrap, topic, 40, partitions=6)
    notes = target_annotations(
        kafka_group=group, kafka_topics=topic, lag_per_replica="abc", offset_reset_policy="earliest"
    )
    await apps.create_namespaced_deployment(
        namespace, deployment(name, sleeper(name), replicas=2, annotations=notes)
    )

    warnings = await eventually(
        lambda: reasons(kube, namespace, name, "InvalidAnnotations"),
        bool,
        timeout=30,
        what="an InvalidAnnotations event",
    )
    await wait_ticks(running_controller, 5)
    warnings = await reasons(kube, namespace, name, "InvalidAnnotations")
    assert len(warnings) == 1, warnings
    assert warnings[0]["type"] == "Warning"
    assert "lag-per-replica='abc'" in warnings[0]["note"]
    assert await spec_replicas(kube, namespace, name) == 2
    assert not running_controller.logged(ControlLog.DECISION_CHANGED, deployment=name)

    await apps.patch_namespaced_deployment(
        name, namespace, {"metadata": {"annotations": {PREFIX + "lag-per-replica": "10"}}}
    )
    await eventually(
        lambda: spec_replicas(kube, namespace, name), lambda n: n == 4, timeout=15, what="4 replicas"
    )
    decided = running_controller.logged(ControlLog.DECISION_CHANGED, deployment=name)
    assert decided[0]["lag"] == 40
    assert decided[0]["rule"] == "scale-up"
    await event_reasons_become(kube, namespace, name, ["InvalidAnnotations", "ScaledUp"])


async def test_a_deployment_deleted_while_it_is_scaled_leaves_the_controller_scaling_its_neighbour(
    devstack: Devstack, kube: client.ApiClient, namespace: str, running_controller: Process
) -> None:
    apps = client.AppsV1Api(kube)
    doomed_topic, survivor_topic = unique("doomed"), unique("survivor")
    for topic in (doomed_topic, survivor_topic):
        await create_topic(devstack.kafka_bootstrap, topic, 6)
    for name, topic in (("doomed", doomed_topic), ("survivor", survivor_topic)):
        notes = target_annotations(
            kafka_group=unique(name),
            kafka_topics=topic,
            lag_per_replica="100",
            offset_reset_policy="earliest",
        )
        await apps.create_namespaced_deployment(
            namespace, deployment(name, sleeper(name), replicas=0, annotations=notes)
        )

    await produce(devstack.kafka_bootstrap, doomed_topic, 250, partitions=6)
    await eventually(
        lambda: spec_replicas(kube, namespace, "doomed"), lambda n: n == 3, timeout=15, what="3 replicas"
    )
    # Its pods are starting and more lag asks for a second patch, to 6: delete the Deployment as soon as the
    # controller has decided it, while that patch is being sent.
    await produce(devstack.kafka_bootstrap, doomed_topic, 300, partitions=6)
    await eventually(
        lambda: asyncio.sleep(
            0,
            [
                d
                for d in running_controller.logged(ControlLog.DECISION_CHANGED, deployment="doomed")
                if d["desired"] == 6
            ],
        ),
        bool,
        timeout=15,
        interval=0.002,
        what="the decision to scale to 6",
    )
    await apps.delete_namespaced_deployment("doomed", namespace)

    await eventually(
        lambda: asyncio.sleep(0, running_controller.logged(ControlLog.TARGET_FORGOTTEN, deployment="doomed")),
        bool,
        timeout=15,
        what="the controller to forget the deleted target",
    )
    running_controller.assert_alive()
    port = await running_controller.wait_port("metrics")
    assert await get_status(f"http://127.0.0.1:{port}/healthz") == 200

    await produce(devstack.kafka_bootstrap, survivor_topic, 150, partitions=6)
    await eventually(
        lambda: spec_replicas(kube, namespace, "survivor"), lambda n: n == 2, timeout=15, what="2 replicas"
    )
    await event_reasons_become(kube, namespace, "survivor", ["ActivatedFromZero"])
    await wait_ticks(running_controller, 2)
    running_controller.assert_alive()
    assert await get_status(f"http://127.0.0.1:{port}/healthz") == 200
    assert problems_logged(running_controller) == [], running_controller.tail()
