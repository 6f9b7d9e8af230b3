"""Scaling writes on the devstack: the scale subresource, last-active, and events.k8s.io Events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from autoscaler.errors import TargetGone
from autoscaler.kube import scaling
from autoscaler.model import TargetKey
from tests.stack import deployment, eventually, python_container

pytestmark = pytest.mark.devstack


def worker(name: str, *, replicas: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    container = python_container(name, "devstack.workers.http_worker", ["--port", "8080"])
    return deployment(name, container, replicas=replicas, annotations=annotations)


async def test_patch_replicas_changes_spec_replicas_and_the_controllers_create_the_pods(
    kube: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    await apps.create_namespaced_deployment(namespace, worker("web", replicas=0))
    target = TargetKey(namespace, "web")

    before = await scaling.patch_replicas(api=kube, target=target, replicas=2)

    assert before == 0
    assert await scaling.read_replicas(api=kube, target=target) == 2
    assert (await apps.read_namespaced_deployment("web", namespace)).spec.replicas == 2

    async def pods() -> list[str]:
        found = await core.list_namespaced_pod(namespace, label_selector="app=web")
        return [pod.metadata.name for pod in found.items if pod.metadata.deletion_timestamp is None]

    await eventually(pods, lambda names: len(names) == 2, timeout=30, what="2 pods")
    assert await scaling.patch_replicas(api=kube, target=target, replicas=2) == 2
    assert await scaling.patch_replicas(api=kube, target=target, replicas=0) == 2
    await eventually(pods, lambda names: names == [], timeout=30, what="no pods")


async def test_concurrent_patches_retry_their_conflicts_and_all_succeed(
    kube: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(namespace, worker("web", replicas=0))
    target = TargetKey(namespace, "web")
    wanted = [3, 5, 7, 9]

    with capture_logs() as logs:
        results = await asyncio.gather(
            *(scaling.patch_replicas(api=kube, target=target, replicas=n) for n in wanted)
        )
    assert "kube.scale.conflict" in [entry["event"] for entry in logs]

    final = await scaling.read_replicas(api=kube, target=target)
    assert final in wanted
    # Each write saw the value left by the write before it: the befores chain through every count once.
    assert sorted(results) == sorted([0, *(n for n in wanted if n != final)])


async def test_a_missing_deployment_is_target_gone_for_every_write(
    kube: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(namespace, worker("web", replicas=0))
    await apps.delete_namespaced_deployment("web", namespace)
    target = TargetKey(namespace, "web")

    async def gone() -> bool:
        try:
            await apps.read_namespaced_deployment("web", namespace)
        except client.ApiException as exc:
            return bool(exc.status == 404)
        return False

    await eventually(gone, bool, timeout=10, what="the deployment to be gone")
    with pytest.raises(TargetGone):
        await scaling.patch_replicas(api=kube, target=target, replicas=1)
    with pytest.raises(TargetGone):
        await scaling.read_replicas(api=kube, target=target)
    with pytest.raises(TargetGone):
        await scaling.write_last_active(api=kube, target=target, when=datetime.now(UTC))


async def test_last_active_round_trips_as_rfc3339_utc_and_none_removes_it(
    kube: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(namespace, worker("web", replicas=0, annotations={"team": "a"}))
    target = TargetKey(namespace, "web")
    when = datetime(2026, 11, 26, 12, 30, 15, 250000, tzinfo=UTC)

    async def annotations() -> dict[str, str]:
        return dict((await apps.read_namespaced_deployment("web", namespace)).metadata.annotations or {})

    await scaling.write_last_active(api=kube, target=target, when=when)
    written = await annotations()
    assert written[scaling.LAST_ACTIVE] == "2026-11-26T12:30:15.250000Z"
    assert datetime.fromisoformat(written[scaling.LAST_ACTIVE].replace("Z", "+00:00")) == when
    assert written["team"] == "a"

    await scaling.write_last_active(api=kube, target=target, when=None)
    assert scaling.LAST_ACTIVE not in await annotations()
    assert (await annotations())["team"] == "a"


async def test_record_event_creates_an_event_regarding_the_deployment_with_the_reporting_instance(
    kube: client.ApiClient, namespace: str
) -> None:
    apps, events = client.AppsV1Api(kube), client.EventsV1Api(kube)
    created = await apps.create_namespaced_deployment(namespace, worker("web", replicas=0))
    target = TargetKey(namespace, "web")

    names = [
        await scaling.record_event(
            api=kube,
            target=target,
            uid=created.metadata.uid,
            type="Normal",
            reason=scaling.SCALED_UP,
            message="lag 30 over 10 per replica: 0 -> 3",
            action="Scale",
            reporting_controller=scaling.REPORTING_CONTROLLER,
            reporting_instance="controller-a",
        ),
        await scaling.record_event(
            api=kube,
            target=target,
            uid=created.metadata.uid,
            type="Warning",
            reason=scaling.LAG_UNAVAILABLE,
            message="x" * 5000,
            action="ReadLag",
            reporting_controller=scaling.REPORTING_CONTROLLER,
            reporting_instance="controller-a",
        ),
    ]

    assert len(set(names)) == 2
    found = {event.metadata.name: event for event in (await events.list_namespaced_event(namespace)).items}
    scaled_up, lag = found[names[0]], found[names[1]]
    assert (scaled_up.type, scaled_up.reason, scaled_up.action) == ("Normal", "ScaledUp", "Scale")
    assert scaled_up.note == "lag 30 over 10 per replica: 0 -> 3"
    assert scaled_up.reporting_controller == "queue-autoscaler.dev/controller"
    assert scaled_up.reporting_instance == "controller-a"
    regarding = scaled_up.regarding
    assert (regarding.kind, regarding.api_version, regarding.name, regarding.namespace, regarding.uid) == (
        "Deployment",
        "apps/v1",
        "web",
        namespace,
        created.metadata.uid,
    )
    assert (lag.type, lag.reason) == ("Warning", "LagUnavailable")
    assert len(lag.note.encode()) <= 1024
