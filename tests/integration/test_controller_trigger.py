"""A subscriber Deployment annotated with `trigger: <name>`, scaled by the real controller on the devstack.

The eventing CRDs of ``manifests/eventing`` are installed for real, and a Broker and a Trigger created in the
test's namespace; no dispatcher runs, so the Trigger's consumer group
(``knative-trigger-<namespace>-<trigger>``) stays where the test commits it on the Broker's topic
(``knative-broker-<namespace>-<broker>``). While the Trigger does not exist the Deployment is held with one
Warning naming it; once it exists, records on the topic scale the Deployment 0 -> N, and committing the group
to the end brings it back to 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from autoscaler.model import broker_topic, trigger_consumer_group
from autoscaler.observability.log_events import ControlLog
from devstack.eventing_harness import BROKER, GROUP, PARTITIONS, VERSION, install_crds
from devstack.kube_rest import Rest
from tests.controller import Process, controller
from tests.integration.test_manifests import kustomize, rest
from tests.stack import (
    Devstack,
    commit,
    create_topic,
    deployment,
    events_of,
    eventually,
    produce,
    python_container,
    spec_replicas,
    target_annotations,
)

__all__ = ["kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack

TRIGGER = "billing-process-trigger"
WORKER = "billing-worker"
PER_PARTITION = 10


def subscriber(name: str, **annotations: str) -> dict[str, Any]:
    """A Deployment whose pods only sleep: the test itself moves the Trigger's consumer group."""
    container = python_container(name, "timeit", ["-n", "1", "-r", "1", "import time; time.sleep(3600)"])
    return deployment(name, container, replicas=0, annotations=target_annotations(**annotations))


def resource(kind: str, name: str, spec: dict[str, Any], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }


@pytest.fixture
async def trigger_controller(
    devstack: Devstack, namespace: str, kustomize: Path, rest: Rest, tmp_path: Path
) -> AsyncIterator[Process]:
    """The real controller for the test's namespace, started once the Trigger resource is served."""
    await install_crds(kustomize, rest)
    process = controller(devstack, tmp_path / "controller.log", namespaces=[namespace]).start()
    try:
        await process.wait_port("metrics")
        yield process
    finally:
        process.stop()


async def test_a_trigger_annotation_holds_until_the_trigger_exists_then_scales_0_n_0_on_its_groups_lag(
    devstack: Devstack, kube: client.ApiClient, namespace: str, trigger_controller: Process
) -> None:
    bootstrap = devstack.kafka_bootstrap
    topic, group = broker_topic(namespace, BROKER), trigger_consumer_group(namespace, TRIGGER)
    custom = client.CustomObjectsApi(kube)
    await custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "brokers",
        resource("Broker", BROKER, {}, **{"eventing.knative.dev/broker.class": "queue-autoscaler"}),
    )
    await create_topic(bootstrap, topic, PARTITIONS)
    await commit(bootstrap, group, topic, dict.fromkeys(range(PARTITIONS), 0))  # where a dispatcher starts
    await produce(bootstrap, topic, PARTITIONS * PER_PARTITION, partitions=PARTITIONS)
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace,
        subscriber(
            WORKER,
            trigger=TRIGGER,
            lag_per_replica=str(PER_PARTITION),
            scale_down_window="1s",
            scale_to_zero_after="3s",
        ),
    )

    async def lag_unavailable() -> list[dict[str, Any]]:
        return [e for e in await events_of(kube, namespace, WORKER) if e["reason"] == "LagUnavailable"]

    held = await eventually(lag_unavailable, bool, timeout=30, interval=0.2, what="a LagUnavailable Event")
    assert f"Trigger {namespace}/{TRIGGER} not found" in held[0]["note"]
    assert await spec_replicas(kube, namespace, WORKER) == 0

    await custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "triggers",
        resource("Trigger", TRIGGER, {"broker": BROKER, "subscriber": {"uri": "http://127.0.0.1:9/"}}),
    )
    await eventually(
        lambda: spec_replicas(kube, namespace, WORKER),
        lambda n: n == PARTITIONS,
        timeout=60,
        interval=0.2,
        what=f"0 -> {PARTITIONS} replicas on the Trigger group's lag",
    )

    await commit(bootstrap, group, topic, dict.fromkeys(range(PARTITIONS), PER_PARTITION))
    await eventually(
        lambda: spec_replicas(kube, namespace, WORKER),
        lambda n: n == 0,
        timeout=60,
        interval=0.2,
        what="back to 0 once the group caught up",
    )
    reasons = [e["reason"] for e in await events_of(kube, namespace, WORKER)]
    assert reasons.count("LagUnavailable") == 1, reasons
    assert reasons[reasons.index("LagUnavailable") + 1 :][:1] == ["ActivatedFromZero"], reasons
    assert reasons[-1] == "ScaledToZero", reasons
    decided = trigger_controller.logged(ControlLog.DECISION_CHANGED, deployment=WORKER)
    assert any(d["lag"] == PARTITIONS * PER_PARTITION for d in decided), trigger_controller.tail()
