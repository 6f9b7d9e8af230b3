"""The examples' billing flow on the event broker, as shipped: the Broker ``default-event-broker`` and the
Trigger ``billing-process-trigger`` of manifests/examples (through the devstack overlay), with the CloudEvents
worker ``billing-worker-service`` at 0 replicas, in a namespace of the test's own, with the eventing CRDs,
the real ingress and dispatcher (delivering through the activator), the controller and the activator.

The Trigger resolves the worker's core Service; billing events wake the worker from zero and each is
delivered once; the other types are filtered out; and the worker's answers are no reply events (the broker
accepts only what was posted)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from autoscaler.observability.log_events import EventingLog
from bench import demo, demo_eventing
from devstack.eventing_harness import BILLING, GROUP, VERSION, broker_processes, install_crds, logged_port
from devstack.kube_rest import Rest
from devstack.processes import parse_metric
from tests.e2e.test_activator import running as controller_and_activator
from tests.e2e.test_examples import rendered
from tests.integration.test_eventing_broker import new_id
from tests.integration.test_manifests import kustomize, rest
from tests.stack import Devstack, eventually

__all__ = ["kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack

WORKER = "billing-worker-service"
OTHERS = ("com.shivamitcs.billing.completed", "com.shivamitcs.shipping.started")


async def apply(kube: client.ApiClient, namespace: str, obj: dict[str, Any]) -> None:
    obj["metadata"]["namespace"] = namespace
    if obj["kind"] == "Deployment":
        await client.AppsV1Api(kube).create_namespaced_deployment(namespace, obj)
    elif obj["kind"] == "Service":
        await client.CoreV1Api(kube).create_namespaced_service(namespace, obj)
    else:
        plural = obj["kind"].lower() + "s"
        await client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, obj
        )


async def test_the_shipped_billing_trigger_wakes_its_worker_with_billing_events_only_and_gets_no_reply_events(
    devstack: Devstack, kube: client.ApiClient, namespace: str, kustomize: Path, rest: Rest, tmp_path: Path
) -> None:
    await install_crds(kustomize, rest)
    record = tmp_path / "received.jsonl"
    shipped = [
        demo.for_the_demo(o, record)  # at 0 replicas, recording what it receives
        for o in await rendered(devstack)
        if o["kind"] in ("Broker", "Trigger") or o["metadata"]["name"] == WORKER
    ]
    assert sorted(o["kind"] for o in shipped) == ["Broker", "Deployment", "Service", "Trigger"]
    for obj in shipped:
        await apply(kube, namespace, obj)
    async with controller_and_activator(devstack, namespace, tmp_path) as stack:
        via = ("--activator-url", f"http://127.0.0.1:{stack.proxy_port}")
        async with broker_processes(
            devstack, kube, namespace, tmp_path, dispatcher_extra=via, create_broker=False
        ) as broker:
            await broker.ready_trigger(demo_eventing.TRIGGER)
            status = await broker.status("triggers", demo_eventing.TRIGGER)
            billing = [new_id() for _ in range(10)]
            others = [(new_id(), t) for t in OTHERS for _ in range(10)]
            for event_id in billing:
                assert await broker.post(event_id, BILLING) == 202
            for event_id, event_type in others:
                assert await broker.post(event_id, event_type) == 202
            dispatcher_port = logged_port(broker.dispatcher, EventingLog.DISPATCHER_STARTED, "metrics_port")
            ingress_port = logged_port(broker.ingress, EventingLog.INGRESS_LISTENING, "metrics_port")
            assert dispatcher_port is not None
            assert ingress_port is not None

            async def finished() -> dict[str, int]:
                text = await demo_eventing.scrape(dispatcher_port)
                return demo_eventing.dispatcher_results(text, namespace=namespace)

            results = await eventually(
                finished,
                lambda r: r.get("delivered", 0) + r.get("filtered", 0) >= len(billing) + len(others),
                timeout=120,
                interval=0.5,
                what="every posted event delivered or filtered out",
            )
            accepted = parse_metric(
                await demo_eventing.scrape(ingress_port),
                "queue_autoscaler_broker_events_accepted_total",
                {"namespace": namespace},
            )
            received = await asyncio.to_thread(demo_eventing.read_record, record)

    assert status["subscriberUri"] == f"http://{WORKER}.{namespace}.svc.cluster.local"
    assert sorted(r["id"] for r in received) == sorted(billing)
    assert {r["type"] for r in received} == {BILLING}
    assert results == {"delivered": len(billing), "filtered": len(others)}
    assert accepted == len(billing) + len(others)  # no answer of the worker went back in as a reply
