"""The billing flow of the event mesh on the devstack, end to end.

The canonical Trigger, with its subscriber changed to the core ``v1 Service`` of ``billing-worker-service``,
routes only ``com.shivamitcs.billing.started`` events to that worker, which the controller scales from 0 on
the Trigger's backlog (its ``trigger`` annotation: the Trigger's consumer group on the Broker's topic) and
back to 0 when it is idle; the dispatcher delivers through the activator, which holds the first events while
the worker wakes. Applied verbatim (a Knative Serving Service, and Knative Serving is not installed) the
Trigger says so in its status.
Timings are printed (``-s``), never asserted.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from devstack.eventing_harness import (
    BILLING,
    GROUP,
    ISSUE_TRIGGER,
    VERSION,
    broker_processes,
    install_crds,
)
from devstack.kube_rest import Rest
from tests.e2e.test_activator import running as controller_and_activator
from tests.integration.test_eventing_broker import new_id
from tests.integration.test_manifests import kustomize, rest
from tests.stack import Devstack, deployment, eventually, python_container, service, target_annotations

__all__ = ["kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack

WORKER = "billing-worker-service"


def recorded(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def replicas(kube: client.ApiClient, namespace: str) -> int:
    scale = await client.AppsV1Api(kube).read_namespaced_deployment_scale(WORKER, namespace)
    return int(scale.spec.replicas or 0)


async def create_worker(kube: client.ApiClient, namespace: str, record: Path, trigger: str) -> None:
    container = python_container(
        WORKER, "tests.e2e.eventing_worker", ["--port", "8080", "--record", str(record)], readiness_port=8080
    )
    annotations = {
        **target_annotations(
            http_service=WORKER,
            http_port="8080",
            trigger=trigger,
            lag_per_replica="20",
            max_replicas="3",
            scale_to_zero_after="10s",
            scale_down_window="5s",
        ),
    }
    await client.CoreV1Api(kube).create_namespaced_service(namespace, service(WORKER, 8080))
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment(WORKER, container, replicas=0, annotations=annotations)
    )


async def test_the_billing_trigger_with_a_v1_service_subscriber_routes_only_billing_events_and_scales_0_n_0(
    devstack: Devstack, kube: client.ApiClient, namespace: str, kustomize: Path, rest: Rest, tmp_path: Path
) -> None:
    await install_crds(kustomize, rest)
    record = tmp_path / "delivered.jsonl"
    trigger = copy.deepcopy(ISSUE_TRIGGER)
    trigger["metadata"]["namespace"] = namespace
    trigger["spec"]["subscriber"] = {"ref": {"apiVersion": "v1", "kind": "Service", "name": WORKER}}
    name = trigger["metadata"]["name"]
    await create_worker(kube, namespace, record, name)
    async with controller_and_activator(devstack, namespace, tmp_path) as stack:
        via = ("--activator-url", f"http://127.0.0.1:{stack.proxy_port}")
        async with broker_processes(devstack, kube, namespace, tmp_path, dispatcher_extra=via) as broker:
            await client.CustomObjectsApi(kube).create_namespaced_custom_object(
                GROUP, VERSION, namespace, "triggers", trigger
            )
            await broker.ready_trigger(name)
            status = await broker.status("triggers", name)
            assert status["subscriberUri"] == f"http://{WORKER}.{namespace}.svc.cluster.local"
            assert await replicas(kube, namespace) == 0

            billing = [new_id() for _ in range(60)]
            others = [new_id() for _ in range(60)]
            posted_at = time.time()
            for one, other in zip(billing, others, strict=True):
                assert await broker.post(one, BILLING) == 202
                assert await broker.post(other, "com.shivamitcs.shipping.started") == 202

            peak = await eventually(
                lambda: replicas(kube, namespace),
                lambda n: n > 0,
                timeout=60,
                interval=0.2,
                what="scale from 0",
            )
            woke = time.time() - posted_at
            delivered = await eventually(
                lambda: asyncio.sleep(0, recorded(record)),
                lambda found: {r["id"] for r in found} >= set(billing),
                timeout=120,
                interval=0.2,
                what="every billing event delivered",
            )
            print(f"\nscaled 0 -> {peak} {woke:.2f} s after the first post; {len(delivered)} deliveries")
            await eventually(
                lambda: replicas(kube, namespace),
                lambda n: n == 0,
                timeout=90,
                interval=0.5,
                what="back to 0",
            )
    ids = [r["id"] for r in recorded(record)]
    assert set(ids) == set(billing)
    assert {r["type"] for r in recorded(record)} == {BILLING}
    print(f"duplicates: {len(ids) - len(set(ids))}")


async def test_the_canonical_trigger_applied_verbatim_reports_that_knative_serving_is_not_installed(
    devstack: Devstack, kube: client.ApiClient, namespace: str, kustomize: Path, rest: Rest, tmp_path: Path
) -> None:
    await install_crds(kustomize, rest)
    verbatim = copy.deepcopy(ISSUE_TRIGGER)
    verbatim["metadata"]["namespace"] = namespace
    async with broker_processes(devstack, kube, namespace, tmp_path) as broker:
        await client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "triggers", verbatim
        )
        conditions = await eventually(
            lambda: broker.conditions("triggers", verbatim["metadata"]["name"]),
            lambda c: "SubscriberResolved" in c,
            timeout=60,
            interval=0.2,
            what="the Trigger's status",
        )
    resolved = conditions["SubscriberResolved"]
    assert (resolved["status"], resolved["reason"]) == ("False", "KnativeServingNotInstalled")
    assert "Knative Serving is not installed" in resolved["message"]
    assert "kind: Service" in resolved["message"]
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == (
        "False",
        "KnativeServingNotInstalled",
    )
