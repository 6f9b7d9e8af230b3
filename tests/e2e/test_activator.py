"""The activator and the controller as real processes on the devstack, in front of real HTTP worker pods.

Each test runs in its own namespace with a worker Deployment at 0 replicas behind a Service. Timings are
measured and printed (``-s``), never asserted: the machine is shared; only the order of events is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.observability.log_events import ActivatorLog, ControlLog, KubeLog
from tests.controller import Process, activator, controller
from tests.stack import (
    Devstack,
    deployment,
    event_reasons_become,
    events_of,
    eventually,
    python_container,
    ready_endpoints,
    service,
    target_annotations,
    unique,
)

pytestmark = pytest.mark.devstack
PREFIX = "queue-autoscaler.dev/"
WORKER = "web"
TOKEN_ENV = "QUEUE_AUTOSCALER_REPORT_TOKEN"
REPORT_URL = PREFIX + "report-url"


@dataclass
class Stack:
    """The controller and activator processes of one test, and where to send requests."""

    namespace: str
    controller: Process
    activator: Process
    proxy_port: int

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.proxy_port}{path}"

    @property
    def host(self) -> str:
        return f"{WORKER}.{self.namespace}"


@dataclass(frozen=True)
class Answer:
    """One request as the client saw it: wall-clock send and response times, status, headers, body."""

    sent_at: float
    answered_at: float
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def send(
    session: aiohttp.ClientSession,
    stack: Stack,
    *,
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Answer:
    sent_at = time.time()
    async with session.request(
        method, stack.url(path), headers={"Host": stack.host, **(headers or {})}, data=data
    ) as response:
        body = await response.read()
        return Answer(sent_at, time.time(), response.status, dict(response.headers), body)


def worker_deployment(
    *, delay: float = 0.0, startup_delay: float = 0.0, **annotations: str
) -> dict[str, Any]:
    container = python_container(
        WORKER,
        "devstack.workers.http_worker",
        ["--port", "8080", "--delay", str(delay), "--startup-delay", str(startup_delay)],
        readiness_port=8080,
    )
    notes = {
        PREFIX + "http-service": WORKER,
        PREFIX + "http-port": "8080",
        **target_annotations(**annotations),
    }
    return deployment(WORKER, container, replicas=0, annotations=notes)


async def create_worker(
    kube: client.ApiClient,
    namespace: str,
    *,
    delay: float = 0.0,
    startup_delay: float = 0.0,
    **annotations: str,
) -> None:
    """The worker Service and its Deployment at 0 replicas, routed by the activator."""
    await client.CoreV1Api(kube).create_namespaced_service(namespace, service(WORKER, 8080))
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, worker_deployment(delay=delay, startup_delay=startup_delay, **annotations)
    )


async def wait_logged(process: Process, event: str, *, timeout: float = 30, **fields: object) -> None:
    async def probe() -> list[dict[str, Any]]:
        process.assert_alive()
        return process.logged(event, **fields)

    await eventually(probe, bool, timeout=timeout, what=f"{event!r} {fields} in {process.log_path.name}")


@contextlib.asynccontextmanager
async def running(
    devstack: Devstack,
    namespace: str,
    tmp_path: Path,
    *,
    leader_election: bool = False,
    activator_extra: Sequence[str] = (),
) -> AsyncIterator[Stack]:
    """Starts the controller, then the activator pointed at it (or at the Lease), stops both afterwards."""
    env = {TOKEN_ENV: unique("token")}
    ctl = controller(
        devstack,
        tmp_path / "controller.log",
        namespaces=[namespace],
        leader_election=leader_election,
        extra=("--lease-namespace", namespace) if leader_election else (),
        env=env,
    )
    act: Process | None = None
    try:
        ctl.start()
        reports = await ctl.wait_port("reports")
        act = activator(
            devstack,
            tmp_path / "activator.log",
            namespaces=[namespace],
            controller_url=None if leader_election else f"http://127.0.0.1:{reports}/v1/reports",
            extra=(*(("--lease-namespace", namespace) if leader_election else ()), *activator_extra),
            env=env,
        )
        act.start()
        proxy_port = await act.wait_port("proxy")
        yield Stack(namespace, ctl, act, proxy_port)
    finally:
        if act is not None and act.proc is not None:
            act.stop()
        if ctl.proc is not None:
            ctl.stop()


async def routed(stack: Stack) -> None:
    """Waits until the activator routes the worker and the controller has decided for it once."""
    await wait_logged(
        stack.activator, ActivatorLog.ROUTE_UPDATED, namespace=stack.namespace, deployment=WORKER
    )
    await wait_logged(
        stack.controller, ControlLog.DECISION_CHANGED, namespace=stack.namespace, deployment=WORKER
    )


async def pods_of(kube: client.ApiClient, namespace: str) -> dict[str, str]:
    """Name -> IP of the worker's pods."""
    pods = await client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"app={WORKER}")
    return {p.metadata.name: p.status.pod_ip for p in pods.items}


async def replicas(kube: client.ApiClient, namespace: str) -> int:
    scale = await client.AppsV1Api(kube).read_namespaced_deployment_scale(WORKER, namespace)
    return int(scale.spec.replicas or 0)


def spread(answers: Sequence[Answer]) -> dict[str, int]:
    """How many of the answers each pod gave."""
    counts: dict[str, int] = {}
    for answer in answers:
        pod = answer.json()["pod"]
        counts[pod] = counts.get(pod, 0) + 1
    return counts


async def test_fifty_concurrent_requests_wake_the_deployment_once_and_are_all_answered_by_its_pods(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # Each request keeps the worker busy for a second, so the concurrency stays visible to the reports.
    delay = 1.0
    await create_worker(kube, namespace, delay=delay, concurrency_per_replica="10")
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        async with aiohttp.ClientSession() as session:
            cold = await asyncio.gather(*(send(session, stack) for _ in range(50)))
            # 50 requests at 10 per replica: 5 replicas. While the Deployment wakes, each endpoint that turns
            # ready takes its share of the queued burst; once all 5 are ready, a second burst spreads too.
            await eventually(
                lambda: ready_endpoints(kube, namespace, WORKER),
                lambda found: len(found) == 5,
                timeout=60,
                what="5 ready endpoints",
            )
            warm = await asyncio.gather(*(send(session, stack) for _ in range(50)))
        pods = await pods_of(kube, namespace)
        events = await events_of(kube, namespace, WORKER)
        scaled = stack.controller.logged(ControlLog.TARGET_SCALED, namespace=namespace, deployment=WORKER)

    assert len(cold) == 50
    assert len(warm) == 50
    assert [a.status for a in [*cold, *warm]] == [200] * 100, [a.body for a in [*cold, *warm]]
    reasons = [e["reason"] for e in events]
    assert reasons.count("ActivatedFromZero") == 1, reasons
    assert [s["reason"] for s in scaled].count("ActivatedFromZero") == 1
    assert max(s["replicas_to"] for s in scaled) == 5
    for answer in [*cold, *warm]:
        body = answer.json()
        assert pods.get(body["pod"]) == body["ip"], f"{body} is not from a pod of the Deployment: {pods}"
    assert len(spread(cold)) > 1, spread(cold)
    assert len(spread(warm)) > 1, spread(warm)
    # The wake-up reaches 5 replicas at once or in a quick follow-up patch, not a tick later in steps of one.
    assert len(scaled) <= 2, scaled

    first_sent = min(a.sent_at for a in cold)
    first = min(cold, key=lambda a: a.answered_at)
    ready_at = float(first.json()["ready_at"])
    activated = next(s for s in scaled if s["reason"] == "ActivatedFromZero")
    patched_at = parse_time(activated["timestamp"])
    event_at = parse_time(next(e for e in events if e["reason"] == "ActivatedFromZero")["eventTime"])
    assert first_sent < patched_at < ready_at < first.answered_at
    print(
        f"\ncold burst answered by {spread(cold)}; warm burst by {spread(warm)}"
        f"\nscale patches: {[(s['replicas_from'], s['replicas_to']) for s in scaled]}"
        f"\nfirst request -> scale patch (controller log): {(patched_at - first_sent) * 1000:.0f} ms"
        f"\nfirst request -> ActivatedFromZero eventTime: {(event_at - first_sent) * 1000:.0f} ms"
        f"\nfirst request -> worker listening (ready_at): {(ready_at - first_sent) * 1000:.0f} ms"
        f"\nfirst request -> first response: {(first.answered_at - first_sent) * 1000:.0f} ms"
        f"\nadded cold start (first response - ready_at - {delay:g}s worker delay): "
        f"{(first.answered_at - ready_at - delay) * 1000:.0f} ms"
    )


async def test_a_full_queue_answers_503_with_retry_after_and_waiting_requests_time_out_with_504(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    max_pending, extra = 5, 3
    # Paused: the controller holds the Deployment at 0 whatever the activator reports.
    await create_worker(kube, namespace, paused="true", max_pending=str(max_pending), activation_timeout="2s")
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(send(session, stack) for _ in range(max_pending + extra)))
            alone = await send(session, stack)
        assert await replicas(kube, namespace) == 0
        events = await events_of(kube, namespace, WORKER)

    assert len(answers) == max_pending + extra
    full = [a for a in answers if a.status == 503]
    timed_out = [a for a in answers if a.status == 504]
    assert len(full) == extra, [(a.status, a.body) for a in answers]
    assert len(timed_out) == max_pending, [(a.status, a.body) for a in answers]
    for answer in full:
        assert answer.headers["Retry-After"] == "1"
        assert b"queue full" in answer.body
        assert b"max-pending" in answer.body
    for answer in [*timed_out, alone]:
        assert b"activation timeout" in answer.body
        assert answer.answered_at - answer.sent_at >= 2.0
    assert alone.status == 504
    assert max(a.answered_at for a in full) < min(a.answered_at for a in timed_out)
    assert events == []


async def test_sigterm_drains_the_buffered_requests_to_the_woken_pod_and_exits_0(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # The pod listens only 3 s after it starts: the requests are still queued when SIGTERM arrives.
    await create_worker(kube, namespace, startup_delay=3.0)
    async with running(devstack, namespace, tmp_path, activator_extra=("--drain-timeout", "60")) as stack:
        await routed(stack)
        labels = {"namespace": namespace, "deployment": WORKER}
        async with aiohttp.ClientSession() as session:
            buffered = [asyncio.create_task(send(session, stack)) for _ in range(10)]
            try:
                await wait_logged(
                    stack.controller,
                    ControlLog.TARGET_SCALED,
                    reason="ActivatedFromZero",
                    namespace=namespace,
                    deployment=WORKER,
                )
                pending = await stack.activator.metric("queue_autoscaler_activator_pending_requests", labels)
                assert pending == 10
                assert stack.activator.proc is not None
                stack.activator.proc.send_signal(signal.SIGTERM)
                await wait_logged(stack.activator, ActivatorLog.DRAIN_STARTED)
                refused = await send(session, stack)
                answers = await asyncio.gather(*buffered)
            finally:
                for task in buffered:
                    task.cancel()
                await asyncio.gather(*buffered, return_exceptions=True)
        returncode = await asyncio.to_thread(stack.activator.proc.wait, 60)

    assert (returncode, len(answers)) == (0, 10), stack.activator.tail()
    assert [a.status for a in answers] == [200] * 10, [a.body for a in answers]
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert b"shutting down" in refused.body
    (draining,) = stack.activator.logged(ActivatorLog.DRAIN_STARTED)
    assert draining["held"] == 10
    (stopped,) = stack.activator.logged(ActivatorLog.SERVER_STOPPED)
    assert stopped["left_unanswered"] == 0
    assert stopped["drain_timed_out"] is False
    print(f"\ndrain: {draining} -> {stopped}")


async def test_cloudevents_are_checked_and_valid_ones_reach_the_worker_byte_for_byte(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await create_worker(kube, namespace, cloudevents="true", cloudevents_types="com.example.started")
    binary_headers = {
        "ce-specversion": "1.0",
        "ce-id": "order-1",
        "ce-source": "/shop/orders",
        "ce-type": "com.example.started",
        "ce-time": "2026-11-26T12:00:00.5Z",
        "ce-shopregion": "eu-west",
        "Content-Type": "application/json; charset=utf-8",
    }
    binary_body = '{"order" :  1, "note": "caf\u00e9 \u2615",\n "raw": [1,2]}'.encode()
    structured_body = (
        b'{ "specversion":"1.0", "id":"order-2","source":"/shop/orders",\n'
        b'  "type":"com.example.started", "datacontenttype":"application/json",\n'
        b'  "data": {"order": 2, "note": "\xc3\xa9t\xc3\xa9"} }'
    )
    structured_type = "application/cloudevents+json; charset=utf-8"
    labels = {"namespace": namespace, "deployment": WORKER}
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        async with aiohttp.ClientSession() as session:
            missing_id = await send(
                session,
                stack,
                method="POST",
                headers={k: v for k, v in binary_headers.items() if k != "ce-id"},
                data=binary_body,
            )
            bad_time = await send(
                session,
                stack,
                method="POST",
                headers={**binary_headers, "ce-time": "yesterday"},
                data=binary_body,
            )
            wrong_type = await send(
                session,
                stack,
                method="POST",
                headers={**binary_headers, "ce-type": "com.example.cancelled"},
                data=binary_body,
            )
            cold_starts = await stack.activator.metric("queue_autoscaler_activator_cold_starts_total", labels)
            binary = await send(session, stack, method="POST", headers=binary_headers, data=binary_body)
            structured = await send(
                session,
                stack,
                method="POST",
                headers={"Content-Type": structured_type},
                data=structured_body,
            )

    assert missing_id.status == 400
    assert b"not a valid CloudEvent" in missing_id.body
    assert b"ce-id" in missing_id.body
    assert bad_time.status == 400
    assert b"ce-time" in bad_time.body
    assert wrong_type.status == 404
    assert b"com.example.cancelled" in wrong_type.body
    assert cold_starts in (None, 0.0)  # refused events never wake the target

    assert binary.status == 200, binary.body
    assert binary.body == binary_body
    echoed = {k.lower(): v for k, v in binary.headers.items() if k.lower().startswith("ce-")}
    assert echoed == {k: v for k, v in binary_headers.items() if k.startswith("ce-")}
    assert binary.headers["X-Received-Content-Type"] == binary_headers["Content-Type"]

    assert structured.status == 200, structured.body
    assert structured.body == structured_body
    assert not [k for k in structured.headers if k.lower().startswith("ce-")]
    assert structured.headers["X-Received-Content-Type"] == structured_type


async def test_without_a_controller_url_the_activator_reports_to_the_leader_named_on_the_lease(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await create_worker(kube, namespace, activation_timeout="30s")
    async with running(devstack, namespace, tmp_path, leader_election=True) as stack:
        await wait_logged(stack.controller, "leadership", leading=True)
        lease = await client.CoordinationV1Api(kube).read_namespaced_lease(
            "queue-autoscaler-controller", namespace
        )
        published = lease.metadata.annotations[REPORT_URL]
        await wait_logged(stack.activator, KubeLog.LEADER_URL_CHANGED, url=published)
        await routed(stack)
        async with aiohttp.ClientSession() as session:
            answer = await send(session, stack, path="/hello?from=lease")
        reports = await stack.activator.metric("queue_autoscaler_activator_reports_total", {"result": "ok"})
        rejected = await stack.activator.metric(
            "queue_autoscaler_activator_reports_total", {"result": "rejected"}
        )

    reports_port = stack.controller.port("reports")
    assert published == f"http://127.0.0.1:{reports_port}/v1/reports"
    assert answer.status == 200, answer.body
    assert answer.json()["path"] == "/hello?from=lease"
    assert reports is not None
    assert reports >= 1
    assert rejected in (None, 0.0)
    await event_reasons_become(kube, namespace, WORKER, ["ActivatedFromZero"])


async def raw_answer(port: int, data: bytes, *, keep_open: bool = False) -> bytes:
    """Sends raw bytes to the activator's proxy port and returns its answer (read until the server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(30):
            return await reader.read(-1)
    finally:
        writer.close()


async def metric(stack: Stack, name: str, **labels: str) -> float:
    """One sample of the activator's /metrics (0 when absent)."""
    port = await stack.activator.wait_port("metrics")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_slow_clients_are_answered_408_and_stop_counting_as_in_flight_for_their_target(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await create_worker(kube, namespace, min_replicas="1")
    bounds = ("--header-timeout", "1", "--body-idle-timeout", "1")
    async with running(devstack, namespace, tmp_path, activator_extra=bounds) as stack:
        await routed(stack)
        await eventually(
            lambda: ready_endpoints(kube, namespace, WORKER),
            lambda found: len(found) == 1,
            timeout=60,
            what="a pod",
        )
        async with aiohttp.ClientSession() as session:
            await eventually(
                lambda: send(session, stack), lambda a: a.status == 200, timeout=30, what="the pod routed"
            )
        head = f"POST / HTTP/1.1\r\nHost: {stack.host}\r\nContent-Length: 1000\r\n\r\n".encode()
        partial_body, unfinished_headers = await asyncio.gather(
            raw_answer(stack.proxy_port, head + b"only the start of the body"),
            raw_answer(stack.proxy_port, f"GET / HTTP/1.1\r\nHost: {stack.host}\r\nX-Never-Ends: ".encode()),
        )
        labels = {"namespace": namespace, "deployment": WORKER}
        in_flight = await metric(stack, "queue_autoscaler_activator_in_flight_requests", **labels)
        stalled_body = await metric(stack, "queue_autoscaler_activator_responses_total", code="408", **labels)
        stalled_headers = await metric(
            stack, "queue_autoscaler_activator_responses_total", code="408", namespace="", deployment=""
        )
    assert partial_body.startswith(b"HTTP/1.1 408 "), partial_body
    assert unfinished_headers.startswith(b"HTTP/1.1 408 "), unfinished_headers
    assert in_flight == 0
    assert (stalled_body, stalled_headers) == (1, 1)
    assert stack.activator.logged(ActivatorLog.REQUEST_STALLED, stage="body")
    assert stack.activator.logged(ActivatorLog.REQUEST_STALLED, stage="headers")


async def test_malformed_requests_get_400_or_431_counted_and_logged_without_a_traceback(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await create_worker(kube, namespace)
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        host = stack.host.encode()
        answers = [
            await raw_answer(stack.proxy_port, request)
            for request in (
                b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nHost: other.host\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-Big: " + b"x" * 100_000 + b"\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: "
                + host
                + b"\r\n"
                + b"".join(b"X-%d: y\r\n" % i for i in range(1000))
                + b"\r\n",
                b"HELLO WORLD\r\n\r\n",
            )
        ]
        counted = {
            code: await metric(stack, "queue_autoscaler_activator_responses_total", code=code, namespace="")
            for code in ("400", "431")
        }
        logged = stack.activator.logged(ActivatorLog.REQUEST_MALFORMED)
        log_text = stack.activator.log_path.read_text(errors="replace")
    assert [answer.split(b" ", 2)[1] for answer in answers] == [b"400", b"431", b"431", b"400"], answers
    assert counted == {"400": 2, "431": 2}
    assert [entry["level"] for entry in logged] == ["info"] * 4
    assert "Traceback" not in log_text


async def test_a_deployment_claiming_another_targets_host_gets_none_of_its_requests(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await create_worker(kube, namespace)
    thief = worker_deployment()
    thief["metadata"]["name"] = "thief"
    thief["metadata"]["annotations"][PREFIX + "http-host"] = f"{WORKER}.{namespace}"
    thief["metadata"]["annotations"][PREFIX + "http-service"] = "thief"
    thief["metadata"]["annotations"][PREFIX + "min-replicas"] = "1"
    thief["spec"]["selector"]["matchLabels"] = {"app": "thief"}
    thief["spec"]["template"]["metadata"]["labels"] = {"app": "thief"}
    await client.CoreV1Api(kube).create_namespaced_service(namespace, service("thief", 8080))
    await client.AppsV1Api(kube).create_namespaced_deployment(namespace, thief)
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        await wait_logged(stack.activator, ActivatorLog.HOST_REFUSED, namespace=namespace, deployment="thief")
        await eventually(
            lambda: ready_endpoints(kube, namespace, "thief"),
            lambda found: len(found) == 1,
            timeout=60,
            what="thief",
        )
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(send(session, stack) for _ in range(3)))
        pods = await pods_of(kube, namespace)
        (refused,) = stack.activator.logged(
            ActivatorLog.HOST_REFUSED, namespace=namespace, deployment="thief"
        )
    assert [a.status for a in answers] == [200] * 3, [a.body for a in answers]
    assert {a.json()["pod"] for a in answers} <= set(pods), pods
    assert f"default host of {namespace}/{WORKER}" in refused["problem"]


async def test_a_pod_passing_the_activators_probe_gets_the_held_request_while_its_slice_still_says_not_ready(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # The kubelet probes only after 20 s, every 10 s: the EndpointSlice says "not ready" for that long.
    worker = worker_deployment()
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    container["readinessProbe"].update({"initialDelaySeconds": 20, "periodSeconds": 10})
    await client.CoreV1Api(kube).create_namespaced_service(namespace, service(WORKER, 8080))
    await client.AppsV1Api(kube).create_namespaced_deployment(namespace, worker)
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        async with aiohttp.ClientSession() as session:
            answer = await send(session, stack, path="/first")
            slices_said_ready = await ready_endpoints(kube, namespace, WORKER)
            async with session.get(stack.url("/"), headers={"Host": f"nobody.{namespace}"}) as elsewhere:
                await elsewhere.read()
        passed = stack.activator.logged(ActivatorLog.PROBE_PASSED, namespace=namespace, deployment=WORKER)
        pods = await pods_of(kube, namespace)
    assert answer.status == 200, answer.body
    assert answer.json()["path"] == "/first"
    assert slices_said_ready == []
    assert [entry["ip"] for entry in passed] == [answer.json()["ip"]]
    assert set(pods.values()) == {answer.json()["ip"]}
    assert elsewhere.status == 404
    first_sent, ready_at = answer.sent_at, float(answer.json()["ready_at"])
    print(
        f"\nfirst request -> worker listening: {(ready_at - first_sent) * 1000:.0f} ms"
        f"\nworker listening -> first response (added): {(answer.answered_at - ready_at) * 1000:.0f} ms"
    )
