"""``devstack/down`` stops everything it started; ``devstack/up`` brings it all back (a stopped Kafka on
its data)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from devstack import kafka, network, procs, servers
from devstack import stack as devstack_stack
from devstack.config import DEVSTACK_DIR, REPO_ROOT
from devstack.stack import COMPONENTS
from tests.stack import (
    Devstack,
    commit,
    create_topic,
    deployment,
    eventually,
    kafka_tool_describe,
    list_topics,
    produce,
    python_container,
    unique,
)

pytestmark = pytest.mark.devstack


def stack_pids(devstack: Devstack) -> list[int]:
    return [e.pid for e in procs.recorded(devstack.layout.pids) if procs.alive(e)]


def daemon_pids(devstack: Devstack) -> dict[str, int]:
    """The shared stack's own daemons by name; pods' processes come and go with other tests' namespaces."""
    return {
        e.name: e.pid for e in procs.recorded(devstack.layout.pids) if procs.alive(e) and e.name in COMPONENTS
    }


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEVSTACK_DIR / script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )


async def test_down_leaves_no_process_and_no_network_namespace_behind_and_up_restores_the_stack(
    devstack: Devstack, kube: client.ApiClient, namespace: str
) -> None:
    # A pod runs, so that `down` has a pod process and a pod network namespace to remove as well.
    apps = client.AppsV1Api(kube)
    container = python_container("idle", "devstack.workers.http_worker", ["--port", "8080"])
    await apps.create_namespaced_deployment(namespace, deployment("idle", container, replicas=1))

    async def ready() -> int:
        return (await apps.read_namespaced_deployment_status("idle", namespace)).status.ready_replicas or 0

    await eventually(ready, lambda n: n == 1, timeout=60, what="the pod to be ready")
    assert len(network.pod_namespaces()) >= 1
    before = stack_pids(devstack)
    assert len(before) >= 6

    down = await asyncio.to_thread(run, "down")
    assert down.returncode == 0, down.stderr

    assert stack_pids(devstack) == []
    for pid in before:
        assert not procs.alive(procs.Recorded("x", pid, 0)), f"pid {pid} still alive"
    assert processes_mentioning(str(devstack.layout.kube_bin)) == []
    assert processes_mentioning("kafka.Kafka") == []
    assert processes_mentioning("devstack.kubelet") == []
    assert processes_mentioning(str(devstack.layout.run / "rabbitmq")) == []
    assert processes_mentioning(f"epmd -port {devstack.layout.rabbitmq_epmd_port}") == []
    assert processes_mentioning(f"redis-server 127.0.0.1:{devstack.layout.redis_port}") == []
    assert processes_mentioning(str(devstack.layout.run / "nats")) == []
    assert processes_mentioning(f"TCP:127.0.0.1:{devstack.layout.nats_port}") == []
    assert network.pod_namespaces() == []
    assert not network.bridge_exists(devstack.layout.bridge)

    up = await asyncio.to_thread(run, "up")
    assert up.returncode == 0, up.stderr
    assert "export KUBECONFIG=" in up.stdout
    status = await asyncio.to_thread(run, "status")
    assert status.returncode == 0, status.stdout


def process_groups(pids: list[int]) -> set[int]:
    """Every live process in the process groups (sessions) of ``pids``: the servers' helpers included."""
    groups = {os.getpgid(pid) for pid in pids if procs.alive(procs.Recorded("x", pid, 0))}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) in groups:
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


async def test_stopping_the_message_servers_ends_rabbitmq_its_epmd_redis_nats_and_the_relay_and_nothing_else(
    devstack: Devstack, tmp_path: Path
) -> None:
    # A second set of the servers on ports of their own, so the shared ones keep running.
    layout = dataclasses.replace(
        devstack.layout,
        run=tmp_path / "run",
        rabbitmq_port=devstack.layout.rabbitmq_port + 100,
        rabbitmq_management_port=devstack.layout.rabbitmq_management_port + 100,
        rabbitmq_dist_port=devstack.layout.rabbitmq_dist_port + 100,
        rabbitmq_epmd_port=devstack.layout.rabbitmq_epmd_port + 100,
        redis_port=devstack.layout.redis_port + 100,
        redis_tls_port=devstack.layout.redis_tls_port + 100,
        nats_port=devstack.layout.nats_port + 100,
        nats_monitor_port=devstack.layout.nats_monitor_port + 100,
    )
    shared_before = daemon_pids(devstack)
    try:
        await asyncio.to_thread(servers.up, layout)
        assert servers.status(layout) == {"rabbitmq": True, "redis": True, "nats": True}
        recorded = {e.name: e.pid for e in procs.recorded(layout.pids) if procs.alive(e)}
        assert sorted(recorded) == sorted(servers.COMPONENTS)
        started = process_groups(list(recorded.values()))

        await asyncio.to_thread(servers.stop, layout)

        assert [e for e in procs.recorded(layout.pids) if procs.alive(e)] == []
        assert {pid for pid in started if procs.alive(procs.Recorded("x", pid, 0))} == set()
        assert processes_mentioning(str(layout.run)) == []
        assert processes_mentioning(f"epmd -port {layout.rabbitmq_epmd_port}") == []
        assert servers.status(layout) == {"rabbitmq": False, "redis": False, "nats": False}
        assert daemon_pids(devstack) == shared_before
    finally:
        await asyncio.to_thread(servers.stop, layout)


async def test_up_brings_a_stopped_kafka_back_on_its_data_with_its_topics_and_committed_offsets(
    devstack: Devstack, capfd: pytest.CaptureFixture[str]
) -> None:
    topic, group = unique("kept"), unique("kept-group")
    await create_topic(devstack.kafka_bootstrap, topic, 1)
    await produce(devstack.kafka_bootstrap, topic, 5)
    await commit(devstack.kafka_bootstrap, group, topic, {0: 3})
    await asyncio.to_thread(kafka.stop, devstack.layout)
    try:
        await asyncio.to_thread(devstack_stack.up, devstack.layout)
    finally:
        if procs.running(kafka.NAME, pid_dir=devstack.layout.pids) is None:
            await asyncio.to_thread(devstack_stack.up, devstack.layout)

    assert "resuming kafka on its data" in capfd.readouterr().err
    assert topic in await list_topics(devstack.kafka_bootstrap)
    rows = await kafka_tool_describe(devstack.kafka_bootstrap, group)
    assert (rows[(topic, 0)].current, rows[(topic, 0)].end) == (3, 5)
