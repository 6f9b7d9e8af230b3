"""The local kubelet as a real cluster's would behave: readiness after restarts, and ``kubectl logs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.stack import Devstack, deployment, eventually, unique

pytestmark = pytest.mark.devstack


def shell_container(name: str, script: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "image": "devstack/shell",
        "command": ["sh", "-c", script],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *({"name": k, "value": v} for k, v in (env or {}).items()),
        ],
    }


async def pods_of(api: client.ApiClient, namespace: str, app: str) -> list[Any]:
    found = await client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}")
    return [p for p in found.items if p.metadata.deletion_timestamp is None]


async def test_pods_without_a_readiness_probe_are_ready_again_after_their_process_exits_and_restarts(
    kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # Each pod's process exits once (as a worker does when its first run fails), then runs on.
    script = 'if [ -e "$MARKS/$POD_NAME" ]; then exec sleep 600; fi; touch "$MARKS/$POD_NAME"; exit 1'
    name = unique("restarts")
    container = shell_container("worker", script, {"MARKS": str(tmp_path)})
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment(name, container, replicas=6)
    )

    async def ready_and_restarted() -> list[tuple[bool, int]]:
        return [
            (bool(p.status.container_statuses[0].ready), p.status.container_statuses[0].restart_count)
            for p in await pods_of(kube, namespace, name)
            if p.status.container_statuses
        ]

    states = await eventually(
        ready_and_restarted,
        lambda s: len(s) == 6 and all(ready and restarts >= 1 for ready, restarts in s),
        timeout=60,
        interval=0.5,
        what="6 pods, each restarted once and ready again",
    )
    scaled = await client.AppsV1Api(kube).read_namespaced_deployment(name, namespace)

    assert len(states) == 6
    assert scaled.status.ready_replicas == 6


async def test_read_namespaced_pod_log_returns_what_the_pods_process_printed(
    devstack: Devstack, kube: client.ApiClient, namespace: str
) -> None:
    name = unique("logs")
    script = 'echo "first line of $POD_NAME"; echo "second line of $POD_NAME"; exec sleep 600'
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment(name, shell_container("printer", script), replicas=1)
    )
    pods = await eventually(
        lambda: pods_of(kube, namespace, name),
        lambda found: len(found) == 1 and found[0].status.phase == "Running",
        timeout=60,
        what="the pod running",
    )
    pod = pods[0].metadata.name
    core = client.CoreV1Api(kube)

    async def log() -> str:
        text: str = await core.read_namespaced_pod_log(pod, namespace, container="printer")
        return text

    text = await eventually(log, lambda t: "second line" in t, timeout=30, what="the pod's output")
    last: str = await core.read_namespaced_pod_log(pod, namespace, container="printer", tail_lines=1)

    assert text == f"first line of {pod}\nsecond line of {pod}\n"
    assert last == f"second line of {pod}\n"
    node = await core.read_node(devstack.layout.node_name)
    assert node.status.daemon_endpoints.kubelet_endpoint.port == devstack.layout.kubelet_port
