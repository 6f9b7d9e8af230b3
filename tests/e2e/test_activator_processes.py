"""``queue-autoscaler activator --processes 2`` on the devstack: two processes share the proxy port, each
reports as its own activator, the controller sums them, and a dead process stops the whole activator."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.observability.log_events import ActivatorLog
from tests.controller import Process
from tests.e2e.test_activator import WORKER, Stack, create_worker, routed, running, send
from tests.stack import Devstack, eventually, ready_endpoints

pytestmark = pytest.mark.devstack

PROCESSES = ("--processes", "2")


def metrics_ports(process: Process) -> list[int]:
    """The metrics port each activator process logged, in the order they logged them."""
    return [int(e["port"]) for e in process.logged("listening", endpoint="metrics")]


async def sample(port: int, name: str, **labels: str) -> float:
    """One sample of the /metrics served on ``port`` (0 when absent)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


async def one_pod_routed(kube: client.ApiClient, stack: Stack) -> None:
    await routed(stack)
    await eventually(
        lambda: ready_endpoints(kube, stack.namespace, WORKER),
        lambda found: len(found) == 1,
        timeout=60,
        what="a pod",
    )


async def test_two_processes_share_the_port_each_serves_requests_and_the_controller_sees_their_sum(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # Each request keeps the worker busy for a while, so that the held requests show in the reports.
    await create_worker(kube, namespace, delay=20.0, min_replicas="1", max_replicas="1")
    requests = 16
    labels = {"namespace": namespace, "deployment": WORKER}
    async with running(devstack, namespace, tmp_path, activator_extra=PROCESSES) as stack:
        await one_pod_routed(kube, stack)
        ports = await eventually(
            lambda: asyncio.sleep(0, metrics_ports(stack.activator)),
            lambda found: len(found) == 2,
            timeout=30,
            what="both processes listening",
        )
        # A connection each: the kernel spreads connections (not requests) over the processes.
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            held = [asyncio.create_task(send(session, stack)) for _ in range(requests)]

            async def counts() -> tuple[list[float], float]:
                stack.activator.assert_alive()
                per_process = [
                    await sample(port, "queue_autoscaler_activator_in_flight_requests", **labels)
                    for port in ports
                ]
                summed = await stack.controller.metric("queue_autoscaler_http_concurrency", labels)
                return per_process, summed or 0.0

            per_process, summed = await eventually(
                counts,
                lambda found: sum(found[0]) == requests and found[1] == requests,
                timeout=15,
                what=f"{requests} requests held over both processes and reported to the controller",
            )
            answers = await asyncio.gather(*held)
        answered = [
            await sample(port, "queue_autoscaler_activator_responses_total", code="200", **labels)
            for port in ports
        ]
    print(f"held per process {per_process}, controller's sum {summed}, answered per process {answered}")
    assert [answer.status for answer in answers] == [200] * requests
    assert all(count > 0 for count in per_process), per_process
    assert all(count > 0 for count in answered), answered


async def test_a_process_that_dies_stops_the_whole_activator_with_a_non_zero_exit(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await create_worker(kube, namespace, min_replicas="1")
    async with running(devstack, namespace, tmp_path, activator_extra=PROCESSES) as stack:
        await one_pod_routed(kube, stack)
        async with aiohttp.ClientSession() as session:
            await eventually(
                lambda: send(session, stack), lambda a: a.status == 200, timeout=30, what="the pod routed"
            )
        started = stack.activator.logged(ActivatorLog.PROCESS_STARTED)
        assert sorted(e["process"] for e in started) == [0, 1]
        os.kill(int(started[1]["pid"]), signal.SIGKILL)
        assert stack.activator.proc is not None
        code = await asyncio.to_thread(stack.activator.proc.wait, 30)
    assert code == 1
    (died,) = stack.activator.logged(ActivatorLog.PROCESS_DIED)
    assert (died["process"], died["exit_code"]) == (1, 128 + signal.SIGKILL)
    assert stack.activator.logged(ActivatorLog.PROCESS_EXITED, process=0, exit_code=0)
