"""The devstack itself: Kafka lag as Kafka's tool reports it, pods as real processes, real EndpointSlices."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from devstack import procs
from devstack.kubelet import POD_PROCESS_PREFIX
from tests.stack import (
    Devstack,
    consume_and_commit,
    create_topic,
    deployment,
    eventually,
    kafka_tool_describe,
    produce,
    python_container,
    ready_endpoints,
    service,
    unique,
)

pytestmark = pytest.mark.devstack


async def test_kafka_consumer_groups_tool_reports_the_lag_left_after_consuming_400_of_1000(
    devstack: Devstack,
) -> None:
    topic, group = unique("lag"), unique("group")
    await create_topic(devstack.kafka_bootstrap, topic, 6)
    await produce(devstack.kafka_bootstrap, topic, 1000, partitions=6)
    consumed = await consume_and_commit(devstack.kafka_bootstrap, topic, group, 400)

    rows = await kafka_tool_describe(devstack.kafka_bootstrap, group)
    lag = {partition: row.lag for (_, partition), row in rows.items()}

    assert consumed == 400
    assert sorted(lag) == [0, 1, 2, 3, 4, 5]
    assert sum(lag.values()) == 600


def pod_processes(devstack: Devstack) -> list[procs.Recorded]:
    return [
        entry
        for entry in procs.recorded(devstack.layout.pids)
        if entry.name.startswith(POD_PROCESS_PREFIX) and procs.alive(entry)
    ]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def test_a_deployment_runs_as_real_processes_with_ready_endpoints_and_scales_to_zero(
    devstack: Devstack, kube: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    name = "web"
    container = python_container(
        name, "devstack.workers.http_worker", ["--port", "8080"], readiness_port=8080
    )
    await core.create_namespaced_service(namespace, service(name, 8080))
    await apps.create_namespaced_deployment(namespace, deployment(name, container, replicas=2))

    async def ready_replicas() -> int:
        status = (await apps.read_namespaced_deployment_status(name, namespace)).status
        return status.ready_replicas or 0

    await eventually(ready_replicas, lambda n: n == 2, timeout=60, what="2 ready replicas")
    addresses = await eventually(
        lambda: ready_endpoints(kube, namespace, name), lambda a: len(a) == 2, timeout=30, what="2 endpoints"
    )
    workers = [p for p in pod_processes(devstack) if "http_worker" in cmdline(p.pid)]
    pods = (await core.list_namespaced_pod(namespace)).items
    assert sorted(p.status.pod_ip for p in pods) == addresses

    answered = set()
    async with aiohttp.ClientSession() as session:
        for address in addresses:
            assert re.fullmatch(r"10\.213\.\d+\.\d+", address)
            async with session.get(f"http://{address}:8080/hello") as response:
                assert response.status == 200
                answered.add((await response.json())["ip"])
    assert answered == set(addresses)

    pids = {p.pid for p in workers if any(p.name.endswith(pod.metadata.uid) for pod in pods)}
    assert len(pids) == 2
    await apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": 0}})

    await eventually(ready_replicas, lambda n: n == 0, timeout=30, what="0 ready replicas")
    await eventually(
        lambda: ready_endpoints(kube, namespace, name), lambda a: a == [], timeout=30, what="no endpoints"
    )

    async def live_pids() -> set[int]:
        return {pid for pid in pids if cmdline(pid)}

    await eventually(live_pids, lambda alive: not alive, timeout=30, what="worker processes to exit")
