"""Leader election on a real Lease: one leader, takeover after a crash and at once after a clean release."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from autoscaler.kube import leases
from autoscaler.kube.leases import LeaderElector
from tests.stack import running

pytestmark = pytest.mark.devstack

LEASE = "controller"
DURATION, DEADLINE, RETRY = 3.0, 2.0, 0.5


def elector(kube: client.ApiClient, namespace: str, identity: str, **kwargs: Any) -> LeaderElector:
    return LeaderElector(
        kube,
        namespace,
        LEASE,
        identity,
        lease_duration=DURATION,
        renew_deadline=DEADLINE,
        retry_period=RETRY,
        annotations={leases.REPORT_URL: f"http://{identity}:8000/report"},
        **kwargs,
    )


async def first_leader(*electors: LeaderElector, timeout: float) -> LeaderElector:
    waits = {asyncio.create_task(e.leading.wait()): e for e in electors}
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    assert done, f"nobody led within {timeout}s"
    return waits[done.pop()]


async def test_of_two_candidates_exactly_one_leads_and_publishes_its_annotations(
    kube: client.ApiClient, namespace: str
) -> None:
    started: list[str] = []
    a = elector(kube, namespace, "a", on_started_leading=lambda: started.append("a"))
    b = elector(kube, namespace, "b", on_started_leading=lambda: started.append("b"))

    async with running(a.run()), running(b.run()):
        leader = await first_leader(a, b, timeout=10)
        follower = b if leader is a else a
        await asyncio.sleep(DURATION + 1)  # several renewals and retries later

        assert leader.is_leader
        assert not follower.is_leader
        assert follower.not_leading.is_set()
        assert started == [leader.identity]
        assert follower.leader == leader.identity
        holder, annotations = await leases.read_leader(api=kube, namespace=namespace, name=LEASE)
        assert holder == leader.identity
        assert annotations[leases.REPORT_URL] == f"http://{leader.identity}:8000/report"


async def test_a_standby_takes_over_within_the_lease_duration_after_the_leader_crashes(
    kube: client.ApiClient, namespace: str
) -> None:
    loop = asyncio.get_running_loop()
    crashed = elector(kube, namespace, "crashed", release_on_cancel=False)
    async with running(crashed.run()) as crashed_task:
        await asyncio.wait_for(crashed.leading.wait(), timeout=10)
        standby = elector(kube, namespace, "standby")
        async with running(standby.run()):
            await asyncio.sleep(RETRY * 3)
            assert not standby.is_leader

            crashed_task.cancel()  # no release: the Lease stays held until it expires
            await asyncio.gather(crashed_task, return_exceptions=True)
            crash = loop.time()
            holder, _ = await leases.read_leader(api=kube, namespace=namespace, name=LEASE)
            assert holder == "crashed"

            await asyncio.wait_for(standby.leading.wait(), timeout=DURATION + 2 * RETRY * 1.2 + 1)
            took = loop.time() - crash

            # It may take over only once the Lease expired (the last renewal was at most RETRY ago).
            assert DURATION - RETRY - 0.2 <= took <= DURATION + 2 * RETRY * 1.2 + 0.5
            holder, annotations = await leases.read_leader(api=kube, namespace=namespace, name=LEASE)
            assert holder == "standby"
            assert annotations[leases.REPORT_URL] == "http://standby:8000/report"
            lease = await client.CoordinationV1Api(kube).read_namespaced_lease(LEASE, namespace)
            assert lease.spec.lease_transitions == 1


async def test_a_standby_takes_over_at_once_after_a_clean_release(
    kube: client.ApiClient, namespace: str
) -> None:
    loop = asyncio.get_running_loop()
    stopped: list[str] = []
    leader = elector(kube, namespace, "leader", on_stopped_leading=lambda: stopped.append("leader"))
    async with running(leader.run()) as leader_task:
        await asyncio.wait_for(leader.leading.wait(), timeout=10)
        standby = elector(kube, namespace, "standby")
        async with running(standby.run()):
            await asyncio.sleep(RETRY * 3)

            leader_task.cancel()
            await asyncio.gather(leader_task, return_exceptions=True)
            released = loop.time()
            assert stopped == ["leader"]
            assert not leader.is_leader

            await asyncio.wait_for(standby.leading.wait(), timeout=DURATION)
            assert loop.time() - released <= RETRY * 1.2 + 0.5


async def test_a_leader_whose_lease_is_taken_stops_leading_at_its_next_renewal(
    kube: client.ApiClient, namespace: str
) -> None:
    stopped = asyncio.Event()
    leader = elector(kube, namespace, "leader", on_stopped_leading=stopped.set)
    coordination = client.CoordinationV1Api(kube)
    async with running(leader.run()):
        await asyncio.wait_for(leader.leading.wait(), timeout=10)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await coordination.patch_namespaced_lease(
            LEASE,
            namespace,
            {"spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 60}},
            _content_type="application/merge-patch+json",
        )

        await asyncio.wait_for(stopped.wait(), timeout=RETRY * 3)
        assert not leader.is_leader
        assert leader.leader == "intruder"
        holder, _ = await leases.read_leader(api=kube, namespace=namespace, name=LEASE)
        assert holder == "intruder"


async def test_read_leader_says_none_for_a_missing_released_or_expired_lease(
    kube: client.ApiClient, namespace: str
) -> None:
    assert await leases.read_leader(api=kube, namespace=namespace, name=LEASE) == (None, {})

    leader = elector(kube, namespace, "leader")
    async with running(leader.run()):
        await asyncio.wait_for(leader.leading.wait(), timeout=10)
        later = datetime.now(UTC) + timedelta(seconds=DURATION + 1)
        holder, annotations = await leases.read_leader(api=kube, namespace=namespace, name=LEASE, now=later)
        assert holder is None
        assert leases.REPORT_URL in annotations

    holder, annotations = await leases.read_leader(api=kube, namespace=namespace, name=LEASE)
    assert holder is None
    assert leases.REPORT_URL not in annotations
