"""The EndpointSlice watch on the devstack: ready pod addresses of a Service, gone when scaled to zero."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import pytest
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from autoscaler.activator import endpoints, server, watching
from autoscaler.kube import targets
from autoscaler.kube.endpointslices import EndpointSliceWatch, ServiceEndpoints, ServiceKey
from autoscaler.model import TargetKey
from autoscaler.policy.annotations import PREFIX
from tests.stack import deployment, eventually, python_container, ready_endpoints, running, service
from tests.unit.activator import helpers

pytestmark = pytest.mark.devstack
T = TypeVar("T")


async def test_ready_addresses_of_a_two_replica_service_appear_and_leave_when_scaled_to_zero(
    kube: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    key = ServiceKey(namespace, "web")
    seen: list[tuple[ServiceKey, ServiceEndpoints | None]] = []
    slice_watch = EndpointSliceWatch(kube, namespaces=[namespace], on_change=lambda k, e: seen.append((k, e)))

    async def current() -> ServiceEndpoints | None:
        found = slice_watch.service(key)
        assert found == slice_watch.snapshot().get(key)
        return found

    async with running(slice_watch.run()):
        await asyncio.wait_for(slice_watch.synced.wait(), timeout=10)
        container = python_container(
            "web", "devstack.workers.http_worker", ["--port", "8080"], readiness_port=8080
        )
        await core.create_namespaced_service(namespace, service("web", 8080))
        await apps.create_namespaced_deployment(namespace, deployment("web", container, replicas=2))

        two = await eventually(
            current, lambda e: e is not None and len(e.addresses) == 2, timeout=60, what="2 ready addresses"
        )
        assert two is not None
        assert sorted(two.addresses) == await ready_endpoints(kube, namespace, "web")
        assert dict(two.ports) == {"http": 8080}
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=web")).items
        assert two.addresses == {pod.status.pod_ip for pod in pods}
        # No address was ever reported before its pod was ready.
        assert all(e is None or len(e.addresses) <= 2 for _, e in seen)

        await apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
        empty = await eventually(
            current, lambda e: e is not None and not e.addresses, timeout=30, what="no ready addresses"
        )
        assert empty is not None
        # The endpointslice controller may keep the slice with its ports, or replace it by a placeholder
        # without ports; both mean "no ready address".
        assert dict(empty.ports) in ({"http": 8080}, {})

        await core.delete_namespaced_service("web", namespace)
        await eventually(current, lambda e: e is None, timeout=30, what="the service to be removed")
    assert seen[-1] == (key, None)


async def test_an_endpoint_leaves_as_soon_as_its_slice_marks_it_terminating(
    kube: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    key = ServiceKey(namespace, "slow")
    slice_watch = EndpointSliceWatch(kube, namespaces=[namespace])
    container = python_container(
        "slow", "devstack.workers.http_worker", ["--port", "8080"], readiness_port=8080
    )
    await core.create_namespaced_service(namespace, service("slow", 8080))
    await apps.create_namespaced_deployment(namespace, deployment("slow", container, replicas=1))

    async def addresses() -> frozenset[str]:
        found = slice_watch.snapshot().get(key)
        return frozenset() if found is None else found.addresses

    async with running(slice_watch.run()):
        (address,) = await eventually(addresses, lambda a: len(a) == 1, timeout=60, what="1 ready address")
        pod = (await core.list_namespaced_pod(namespace, label_selector="app=slow")).items[0]

        await core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=30)
        await eventually(addresses, lambda a: address not in a, timeout=10, what="the address to leave")

        # The pod is still shutting down (or its slice entry still lists it as terminating), yet it is gone.
        slices = await client.DiscoveryV1Api(kube).list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=slow"
        )
        listed = [
            endpoint
            for item in slices.items
            for endpoint in item.endpoints or []
            if address in endpoint.addresses
        ]
        assert all(not e.conditions.ready or e.conditions.terminating for e in listed)


async def test_the_first_pod_after_zero_gets_the_held_request_on_its_port_though_the_slice_had_no_ports(
    kube: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    key, target = ServiceKey(namespace, "web"), TargetKey(namespace, "web")
    activator = server.Activator(registry=CollectorRegistry())
    slice_watch = EndpointSliceWatch(
        kube, namespaces=[namespace], on_change=lambda k, _: router.service_changed(k.namespace, k.name)
    )
    router = watching.EndpointRouter(activator, lambda ns, name: slice_watch.service(ServiceKey(ns, name)))
    deployment_watch = targets.TargetWatch(kube, namespaces=[namespace], on_change=router.deployment_changed)
    # The Service's port (80) is not the pods' port (8080), and http-port is unset: the Service's only port.
    web_service = service("web", 8080)
    web_service["spec"]["ports"] = [{"name": "http", "port": 80, "targetPort": 8080}]
    container = python_container(
        "web", "devstack.workers.http_worker", ["--port", "8080"], readiness_port=8080
    )
    async with (
        running(slice_watch.run()),
        running(deployment_watch.run()),
        helpers.proxy_serving(server.build_server(activator)) as port,
        aiohttp.ClientSession() as session,
    ):
        await asyncio.wait_for(asyncio.gather(slice_watch.synced.wait(), deployment_watch.synced.wait()), 10)
        await core.create_namespaced_service(namespace, web_service)
        annotations = {PREFIX + "http-service": "web", PREFIX + "activation-timeout": "90s"}
        await apps.create_namespaced_deployment(
            namespace, deployment("web", container, replicas=0, annotations=annotations)
        )
        await eventually(
            polled(lambda: slice_watch.snapshot().get(key)),
            lambda e: e is not None and not e.ports and not e.addresses,
            timeout=30,
            what="the placeholder slice without ports",
        )
        await eventually(polled(lambda: target in activator.routes), bool, timeout=30, what="route")

        async def get() -> tuple[int, dict[str, object]]:
            async with session.get(
                f"http://127.0.0.1:{port}/first", headers={"Host": f"web.{namespace}"}
            ) as r:
                return r.status, await r.json(content_type=None)

        held = asyncio.create_task(get())
        await eventually(
            polled(lambda: activator.buffer.queued(target)),
            lambda n: n == 1,
            timeout=10,
            what="queued",
        )
        await apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
        status, answer = await asyncio.wait_for(held, 90)
        assert status == 200
        assert answer["path"] == "/first"
        assert activator.endpoints.ready(target) == {endpoints.Address(str(answer["ip"]), 8080)}
    await activator.close()


def polled(read: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def probe() -> T:
        return read()

    return probe
