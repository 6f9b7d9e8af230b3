"""``devstack/down`` stops everything it started; ``devstack/up`` brings it all back."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from kubernetes_asyncio import client

from devstack import network, procs
from devstack.config import DEVSTACK_DIR, REPO_ROOT
from tests.stack import Devstack, deployment, eventually, python_container

pytestmark = pytest.mark.devstack


def stack_pids(devstack: Devstack) -> list[int]:
    return [e.pid for e in procs.recorded(devstack.layout.pids) if procs.alive(e)]


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
    assert network.pod_namespaces() == []
    assert not network.bridge_exists(devstack.layout.bridge)

    up = await asyncio.to_thread(run, "up")
    assert up.returncode == 0, up.stderr
    assert "export KUBECONFIG=" in up.stdout
    status = await asyncio.to_thread(run, "status")
    assert status.returncode == 0, status.stdout
