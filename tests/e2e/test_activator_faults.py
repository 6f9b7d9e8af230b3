"""The activator's probe-driven wake-up on the devstack when pods misbehave, and what it never probes.

Real controller and activator processes, real worker pods: a pod that passes the activator's run of its
readiness probe and then dies (before or while answering), and a Deployment that is not a target.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from autoscaler.observability.log_events import ActivatorLog
from tests.e2e.test_activator import (
    WORKER,
    Answer,
    metric,
    pods_of,
    routed,
    running,
    send,
    worker_deployment,
)
from tests.stack import Devstack, deployment, eventually, python_container, ready_endpoints, service

pytestmark = pytest.mark.devstack

ACTIVATION_TIMEOUT = 15
REQUESTS = 5


def slow_kubelet(worker: dict[str, Any], *worker_args: str) -> dict[str, Any]:
    """``worker`` with extra worker arguments and a kubelet that probes only after 60 s: until then its
    EndpointSlice says "not ready" and only the activator's own probe can find the pod listening."""
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    container["args"] = [*container["args"], *worker_args]
    container["readinessProbe"].update({"initialDelaySeconds": 60, "periodSeconds": 10})
    return worker


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(("--exit-after-probes", "1"), id="stops-listening-after-its-probe"),
        pytest.param(("--exit-on-request",), id="dies-while-answering"),
    ],
)
async def test_a_pod_that_passes_the_probe_and_then_dies_leaves_no_request_unanswered_or_hung(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path, failure: tuple[str, ...]
) -> None:
    worker = slow_kubelet(worker_deployment(activation_timeout=f"{ACTIVATION_TIMEOUT}s"), *failure)
    await client.CoreV1Api(kube).create_namespaced_service(namespace, service(WORKER, 8080))
    await client.AppsV1Api(kube).create_namespaced_deployment(namespace, worker)
    # A request may wait up to the activation timeout, then be forwarded and fail: the client waits longer.
    patience = aiohttp.ClientTimeout(total=ACTIVATION_TIMEOUT + 30)
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        async with aiohttp.ClientSession(timeout=patience) as session:
            answers: list[Answer] = await asyncio.gather(
                *(send(session, stack, path=f"/{n}") for n in range(REQUESTS))
            )
        labels = {"namespace": namespace, "deployment": WORKER}
        counted = {
            code: await metric(stack, "queue_autoscaler_activator_responses_total", code=code, **labels)
            for code in ("200", "502", "503", "504")
        }
        passed = stack.activator.logged(ActivatorLog.PROBE_PASSED, **labels)
        failed = stack.activator.logged(ActivatorLog.UPSTREAM_FAILED, **labels)
        pods = await pods_of(kube, namespace)
    statuses = sorted(a.status for a in answers)
    # Every container of this pod dies before it answers a request: none can get 200.
    assert set(statuses) <= {502, 504}, [(a.status, a.body) for a in answers]
    assert 502 in statuses, [(a.status, a.body) for a in answers]
    for answer in answers:
        expected = b"upstream failed" if answer.status == 502 else b"activation timeout"
        assert expected in answer.body, answer.body
    # Exactly one answer per request, as the activator counted them.
    assert counted == {"200": 0, "502": statuses.count(502), "503": 0, "504": statuses.count(504)}
    assert sum(counted.values()) == REQUESTS
    assert passed, "the activator's probe never passed"
    assert {entry["ip"] for entry in passed} <= set(pods.values())
    assert [entry["status"] for entry in failed] == [502] * statuses.count(502)
    print(f"\n{failure}: statuses {statuses}, probe passed {len(passed)} time(s)")


async def test_requests_to_a_host_that_is_not_a_target_are_never_probed_or_forwarded(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # A target at zero, woken by a request and found by the activator's probe ...
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    await core.create_namespaced_service(namespace, service(WORKER, 8080))
    await apps.create_namespaced_deployment(namespace, slow_kubelet(worker_deployment()))
    # ... and, next to it, a running Deployment that is not a target, its pod "not ready" for 60 s.
    container = python_container(
        "other", "devstack.workers.http_worker", ["--port", "8080"], readiness_port=8080
    )
    container["readinessProbe"].update({"initialDelaySeconds": 60, "periodSeconds": 10})
    other = deployment("other", container, replicas=1, annotations={})
    await core.create_namespaced_service(namespace, service("other", 8080))
    await apps.create_namespaced_deployment(namespace, other)
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        other_ip = await eventually(
            lambda: _pod_ip(kube, namespace, "other"), bool, timeout=120, what="the other pod's address"
        )
        assert other_ip is not None
        async with aiohttp.ClientSession() as session:
            hosts = [
                f"other.{namespace}",
                f"other.{namespace}.svc.cluster.local",
                f"{other_ip}:8080",
                other_ip,
            ]
            refused = []
            for host in hosts:
                async with session.get(stack.url("/"), headers={"Host": host}) as response:
                    refused.append((host, response.status, await response.text()))
            woken = await send(session, stack, path="/woken")
            # Asked directly (not through the activator): how many probes it ever received.
            seen = await eventually(
                lambda: _direct(session, other_ip), lambda found: found is not None, timeout=60, what="other"
            )
        not_found = await metric(
            stack, "queue_autoscaler_activator_responses_total", code="404", namespace="", deployment=""
        )
        passed = stack.activator.logged(ActivatorLog.PROBE_PASSED, namespace=namespace)
        slices_said_ready = await ready_endpoints(kube, namespace, "other")
    assert [status for _, status, _ in refused] == [404] * len(hosts), refused
    assert all("no Deployment is routed for Host" in text for _, _, text in refused), refused
    assert not_found == len(hosts)
    assert woken.status == 200, woken.body
    assert seen is not None
    assert seen["probes"] == 0, seen
    assert slices_said_ready == []
    assert [entry["deployment"] for entry in passed] == [WORKER]
    assert other_ip not in {entry["ip"] for entry in passed}


async def _pod_ip(kube: client.ApiClient, namespace: str, app: str) -> str | None:
    pods = await client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"app={app}")
    return next((p.status.pod_ip for p in pods.items if p.status and p.status.pod_ip), None)


async def _direct(session: aiohttp.ClientSession, ip: str) -> dict[str, Any] | None:
    """The worker's own answer to GET / at its pod address; None while it does not listen yet."""
    try:
        async with session.get(f"http://{ip}:8080/direct") as response:
            found: dict[str, Any] = await response.json()
            return found
    except aiohttp.ClientError:
        return None
