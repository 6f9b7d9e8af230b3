"""manifests/examples as shipped, through the devstack overlay (manifests/devstack): the workers run on the
local kubelet, the Kafka worker joins its group on the devstack's Kafka, the HTTP worker passes its probe."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from bench import load
from devstack.config import REPO_ROOT
from tests.stack import Devstack, eventually

pytestmark = pytest.mark.devstack


async def rendered(devstack: Devstack) -> list[dict[str, Any]]:
    binary = devstack.layout.kustomize
    if not binary.exists():
        pytest.fail(f"kustomize is not installed at {binary}; run devstack/build-tools", pytrace=False)
    done = await asyncio.to_thread(
        subprocess.run,
        [str(binary), "build", str(REPO_ROOT / "manifests" / "devstack")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


async def test_the_examples_run_on_the_devstack_as_shipped_and_their_workers_become_ready(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    objects = await rendered(devstack)
    # The examples' topic, as the demo makes it (kept when it exists: the demo may be using it).
    await load.ensure_topic(devstack.kafka_bootstrap, "billing", 6)
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    for obj in objects:
        obj["metadata"]["namespace"] = namespace  # the test's own namespace instead of `billing`
        if obj["kind"] == "Deployment":
            await apps.create_namespaced_deployment(namespace, obj)
        elif obj["kind"] == "Service":
            await core.create_namespaced_service(namespace, obj)

    async def pods() -> dict[str, Any]:
        found = await core.list_namespaced_pod(namespace)
        return {p.metadata.labels["app"]: p for p in found.items if p.metadata.deletion_timestamp is None}

    def all_ready(found: dict[str, Any]) -> bool:
        return len(found) == len(deployments) and all(
            p.status.container_statuses and p.status.container_statuses[0].ready for p in found.values()
        )

    running = await eventually(pods, all_ready, timeout=90, interval=0.5, what="both example workers ready")
    worker = running["billing-worker"]

    async def worker_log() -> str:
        # Raw: the client would decode a log that happens to be one JSON document into a dict.
        response = await core.read_namespaced_pod_log(
            worker.metadata.name, namespace, container="worker", _preload_content=False
        )
        text: str = (await response.read()).decode()
        return text

    log = await eventually(
        worker_log, lambda t: '"event": "started"' in t, timeout=60, what="the consumer's start in its log"
    )

    assert sorted(running) == ["billing-worker", "billing-worker-service"]
    assert f'"pod": "{worker.metadata.name}"' in log
    assert [d["spec"].get("replicas") for d in deployments] == [None, None]
