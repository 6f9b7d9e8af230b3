"""The Deployment watch on the devstack: annotated Deployments come, change and go; plain ones are ignored."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio import client

from autoscaler.kube import targets, watch
from autoscaler.kube.targets import DeploymentInfo, TargetWatch
from autoscaler.model import TargetKey
from tests.stack import deployment, eventually, python_container, running, unique

pytestmark = pytest.mark.devstack

P = targets.PREFIX


def is_value(expected: str) -> Callable[[str | None], bool]:
    return lambda value: value == expected


def idle_deployment(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Deployment at 0 replicas: no pods, only the object."""
    container = python_container(name, "devstack.workers.http_worker", ["--port", "8080"])
    return deployment(name, container, replicas=0, annotations=annotations)


async def test_annotated_deployments_are_cached_when_created_changed_and_deleted_and_plain_ones_never(
    kube: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube)
    seen: list[tuple[TargetKey, DeploymentInfo | None]] = []
    target_watch = TargetWatch(
        kube, namespaces=[namespace], on_change=lambda key, info: seen.append((key, info))
    )
    web = TargetKey(namespace, "web")

    async def snapshot() -> dict[TargetKey, DeploymentInfo]:
        return dict(target_watch.snapshot())

    async with running(target_watch.run()):
        await asyncio.wait_for(target_watch.synced.wait(), timeout=10)
        assert target_watch.snapshot() == {}

        await apps.create_namespaced_deployment(namespace, idle_deployment("plain", {"team": "a"}))
        created = await apps.create_namespaced_deployment(
            namespace, idle_deployment("web", {P + "kafka-group": "orders", "team": "a"})
        )
        cached = await eventually(snapshot, lambda s: web in s, timeout=10, what="web in the cache")
        info = cached[web]
        assert info.uid == created.metadata.uid
        assert info.annotations == {P + "kafka-group": "orders"}
        assert info.replicas == 0
        assert info.generation >= 1
        assert target_watch.changed.is_set()

        await apps.patch_namespaced_deployment(
            "web", namespace, {"metadata": {"annotations": {P + "lag-per-replica": "5"}}}
        )
        await eventually(
            snapshot,
            lambda s: s[web].annotations.get(P + "lag-per-replica") == "5",
            timeout=10,
            what="the new annotation in the cache",
        )

        await apps.patch_namespaced_deployment(
            "web",
            namespace,
            {"metadata": {"annotations": {P + "kafka-group": None, P + "lag-per-replica": None}}},
        )
        await eventually(
            snapshot, lambda s: web not in s, timeout=10, what="web to leave with its annotations"
        )

        await apps.patch_namespaced_deployment(
            "web", namespace, {"metadata": {"annotations": {P + "http-service": "web"}}}
        )
        await eventually(snapshot, lambda s: web in s, timeout=10, what="web to come back annotated")
        await apps.delete_namespaced_deployment("web", namespace)
        await eventually(snapshot, lambda s: web not in s, timeout=10, what="web to leave when deleted")

    assert {key for key, _ in seen} == {web}
    assert seen[-1] == (web, None)
    assert [info is None for _, info in seen].count(True) == 2


async def test_the_all_namespaces_watch_sees_targets_in_every_namespace(
    kube: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    other = unique("t")
    await core.create_namespace({"metadata": {"name": other}})
    try:
        target_watch = TargetWatch(kube)
        async with running(target_watch.run()):
            await asyncio.wait_for(target_watch.synced.wait(), timeout=10)
            for ns in (namespace, other):
                await apps.create_namespaced_deployment(
                    ns, idle_deployment("worker", {P + "kafka-group": ns})
                )

            async def ours() -> set[TargetKey]:
                return {key for key in target_watch.snapshot() if key.namespace in (namespace, other)}

            found = await eventually(ours, lambda keys: len(keys) == 2, timeout=10, what="both targets")
            assert found == {TargetKey(namespace, "worker"), TargetKey(other, "worker")}
    finally:
        await core.delete_namespace(other)


async def test_the_watch_resumes_across_many_reconnects_without_listing_again(
    kube: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube)
    target_watch = TargetWatch(kube, namespaces=[namespace], timeout_seconds=1)
    web = TargetKey(namespace, "web")

    async def lag_per_replica() -> str | None:
        info = target_watch.snapshot().get(web)
        return None if info is None else info.annotations.get(P + "lag-per-replica")

    async with running(target_watch.run()):
        await asyncio.wait_for(target_watch.synced.wait(), timeout=10)
        await apps.create_namespaced_deployment(
            namespace, idle_deployment("web", {P + "kafka-group": "g", P + "lag-per-replica": "0"})
        )
        # Each server-side watch lasts 1 s; changes made across several of them must all arrive.
        for step in range(1, 5):
            await asyncio.sleep(0.7)
            await apps.patch_namespaced_deployment(
                "web", namespace, {"metadata": {"annotations": {P + "lag-per-replica": str(step)}}}
            )
            await eventually(lag_per_replica, is_value(str(step)), timeout=10, what=f"step {step}")

    (resource_watch,) = target_watch.watches
    assert resource_watch.lists == 1
    assert resource_watch.connections >= 3
    assert resource_watch.expired == 0


async def test_a_watch_resumed_from_a_stale_resource_version_lists_again_and_drops_what_it_missed(
    kube: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube)
    for name in ("a", "b"):
        await apps.create_namespaced_deployment(namespace, idle_deployment(name, {P + "kafka-group": name}))
    first_watch = True

    async def list_deployments(**kwargs: Any) -> Any:
        """The real list call, except that the first watch resumes from resourceVersion 1, after changes it
        never sees as events: the state a watch is in after a long disconnection."""
        nonlocal first_watch
        if kwargs.get("watch") and first_watch:
            first_watch = False
            await apps.delete_namespaced_deployment("b", namespace)
            await apps.create_namespaced_deployment(namespace, idle_deployment("c", {P + "kafka-group": "c"}))
            kwargs["resource_version"] = "1"
        return await apps.list_namespaced_deployment(namespace, **kwargs)

    resource_watch = watch.ResourceWatch(
        list_deployments,
        parse=targets.parse_deployment,
        what=f"deployments in {namespace}",
        timeout_seconds=30,
    )
    cache = targets.TargetCache()

    async def names() -> set[str]:
        return {key.name for key in cache.items}

    async with running(watch.consume(resource_watch, cache.apply)):
        await eventually(names, lambda found: found == {"a", "c"}, timeout=10, what="a and c only")

    # Once the API server's watch cache has moved past resourceVersion 1 (any devstack that ran a while) it
    # answers 410 Gone and the watch lists again; a fresh one replays history from 1 instead.
    if resource_watch.expired:
        assert (resource_watch.expired, resource_watch.lists) == (1, 2)
    else:
        assert resource_watch.lists == 1
