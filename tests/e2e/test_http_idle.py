"""Idle means no request for scale-to-zero-after: steady light HTTP traffic keeps its target awake.

The real controller and activator processes on the devstack, with a worker Deployment behind the activator.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from autoscaler.observability.log_events import ControlLog
from tests.e2e.test_activator import WORKER, create_worker, routed, running, send
from tests.stack import Devstack

pytestmark = pytest.mark.devstack


async def test_thirty_short_requests_two_seconds_apart_never_scale_the_target_to_zero(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # 50 ms per request, one every 2 s: a report (every second) almost never sees one in flight.
    await create_worker(kube, namespace, delay=0.05, scale_to_zero_after="30s", scale_down_window="5s")
    async with running(devstack, namespace, tmp_path) as stack:
        await routed(stack)
        answers = []
        async with aiohttp.ClientSession() as session:
            for _ in range(30):
                answers.append(await send(session, stack))
                await asyncio.sleep(2.0)  # the traffic's pace, not a wait for a condition
        scaled = stack.controller.logged(ControlLog.TARGET_SCALED, namespace=namespace, deployment=WORKER)

    assert [a.status for a in answers] == [200] * 30
    assert [(s["replicas_from"], s["replicas_to"]) for s in scaled] == [(0, 1)], scaled  # one wake, 0 downs
