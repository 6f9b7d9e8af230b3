"""Two real controller processes share one Lease: one scales, the other stands by; SIGKILL the leader and
the standby takes over within the issue's 15 s, and there are never two writers.

Both run ``queue-autoscaler run --leader-election true`` with their own ``--identity``, the Lease in the
test's namespace and the default Lease timing (10 s duration, 7 s renew deadline, 1.5 s retry period). A
takeover after a crash takes about duration + retry period, at most duration + 2.4 × retry period: the
standby counts the duration from when it last saw the Lease change, and retries with up to 20% jitter.

The worker Deployment's pods consume nothing, so the lag of its consumer group is exactly what the test
produced (offset-reset-policy earliest: every record counts) and each replica count is deterministic:
250 records / 100 per replica → 3, 450 → 5.

While the test runs, a sampler reads the Lease every 100 ms; its ``acquireTime`` values give who held the
Lease when. Every Event of ours and every scale patch in a controller's log must come from the holder of
that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.controller import Process, controller
from tests.stack import (
    Devstack,
    create_topic,
    deployment,
    events_of,
    eventually,
    produce,
    spec_replicas,
    unique,
)

pytestmark = pytest.mark.devstack

PREFIX = "queue-autoscaler.dev/"
LEASE = "queue-autoscaler-controller"
LEASE_TIMING = ("--lease-duration", "10", "--renew-deadline", "7", "--retry-period", "1.5")  # the defaults
TAKEOVER_BOUND = 15.0  # seconds, from the issue
PARTITIONS = 6


@dataclass(frozen=True)
class LeaseSample:
    at: datetime  # when the sampler read it
    holder: str
    acquired: datetime | None
    transitions: int


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeaseSampler:
    """Reads the Lease every ``every`` seconds and keeps each distinct (holder, acquireTime)."""

    def __init__(self, api: client.ApiClient, namespace: str, *, every: float = 0.1) -> None:
        self._coordination = client.CoordinationV1Api(api)
        self._namespace = namespace
        self._every = every
        self.samples: list[LeaseSample] = []
        self.versions: list[tuple[datetime, str, str, datetime | None]] = []  # for failure messages

    @property
    def holder(self) -> str:
        return self.samples[-1].holder if self.samples else ""

    async def run(self) -> None:
        while True:
            try:
                lease = await self._coordination.read_namespaced_lease(LEASE, self._namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            else:
                spec = lease.spec
                sample = LeaseSample(
                    at=datetime.now(UTC),
                    holder=spec.holder_identity or "",
                    acquired=spec.acquire_time,
                    transitions=spec.lease_transitions or 0,
                )
                if not self.versions or self.versions[-1][1] != lease.metadata.resource_version:
                    self.versions.append(
                        (sample.at, lease.metadata.resource_version, sample.holder, spec.renew_time)
                    )
                last = self.samples[-1] if self.samples else None
                if last is None or (last.holder, last.acquired) != (sample.holder, sample.acquired):
                    self.samples.append(sample)
            await asyncio.sleep(self._every)

    def holder_at(self, when: datetime) -> str | None:
        """Who held the Lease at ``when``: the holder with the latest acquireTime not after it."""
        held = [s for s in self.samples if s.holder and s.acquired is not None and s.acquired <= when]
        return max(held, key=lambda s: s.acquired or when).holder if held else None


@contextlib.asynccontextmanager
async def sampling(sampler: LeaseSampler) -> AsyncIterator[LeaseSampler]:
    task = asyncio.create_task(sampler.run(), name="lease sampler")
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def sleeper(name: str) -> dict[str, Any]:
    """A worker that consumes nothing: the lag stays exactly what the test produced."""
    return {
        "name": name,
        "image": "devstack/python",
        "command": [sys.executable, "-c", "import time; time.sleep(3600)"],
    }


def scale_patches(process: Process) -> list[dict[str, Any]]:
    return [e for e in process.logs() if e.get("event") == "kube.scale.patched"]


async def leader_gauge(process: Process) -> float | None:
    return await process.metric("queue_autoscaler_leader")


async def test_one_of_two_controllers_leads_and_the_standby_takes_over_within_15s_after_a_sigkill(
    devstack: Devstack, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    topic, group, name = unique("failover"), unique("workers"), "worker"
    await create_topic(devstack.kafka_bootstrap, topic, PARTITIONS)
    annotations = {
        PREFIX + "kafka-group": group,
        PREFIX + "kafka-topics": topic,
        PREFIX + "lag-per-replica": "100",
        PREFIX + "offset-reset-policy": "earliest",
        PREFIX + "max-replicas": "6",
    }
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment(name, sleeper(name), replicas=0, annotations=annotations)
    )
    processes = {
        identity: controller(
            devstack,
            tmp_path / f"{identity}.log",
            namespaces=[namespace],
            identity=identity,
            leader_election=True,
            extra=("--lease-namespace", namespace, *LEASE_TIMING),
        )
        for identity in ("controller-a", "controller-b")
    }
    sampler = LeaseSampler(kube, namespace)
    try:
        async with sampling(sampler):
            for process in processes.values():
                process.start()
            for process in processes.values():
                await process.wait_port("metrics")

            # Exactly one leads: the Lease names it, its gauge says 1, the other's says 0.
            leader_id = await eventually(
                lambda: asyncio.sleep(0, sampler.holder),
                lambda holder: holder in processes,
                timeout=20,
                what="a Lease holder",
            )
            leader = processes[leader_id]
            standby_id = next(i for i in processes if i != leader_id)
            standby = processes[standby_id]
            await eventually(
                lambda: leader_gauge(leader), lambda v: v == 1, timeout=10, what="the leader's gauge"
            )
            assert await leader_gauge(standby) == 0

            # The leader scales: 250 records → 3 replicas, with its identity on the Events.
            await produce(devstack.kafka_bootstrap, topic, 250, partitions=PARTITIONS)
            await eventually(
                lambda: spec_replicas(kube, namespace, name), lambda n: n == 3, timeout=15, what="3 replicas"
            )
            first = await eventually(
                lambda: events_of(kube, namespace, name), bool, timeout=10, what="the first Event"
            )
            assert first[0]["reason"] == "ActivatedFromZero"
            assert {e["reportingInstance"] for e in first} == {leader_id}
            await asyncio.sleep(3)  # a few ticks of both: the standby stays silent
            assert sampler.holder == leader_id
            assert not scale_patches(standby), standby.tail()

            # SIGKILL the leader: it cannot release the Lease. More work arrives at once.
            killed_at = datetime.now(UTC)
            killed_mono = time.monotonic()
            leader.kill()
            await produce(devstack.kafka_bootstrap, topic, 200, partitions=PARTITIONS)
            await eventually(
                lambda: asyncio.sleep(0, sampler.holder),
                lambda holder: holder == standby_id,
                timeout=TAKEOVER_BOUND + 10,
                interval=0.05,
                what=f"{standby_id} to hold the Lease",
            )
            observed = time.monotonic() - killed_mono
            acquired = sampler.samples[-1].acquired
            assert acquired is not None
            takeover = (acquired - killed_at).total_seconds()
            await eventually(
                lambda: spec_replicas(kube, namespace, name), lambda n: n == 5, timeout=15, what="5 replicas"
            )
            scaled = time.monotonic() - killed_mono
            print(
                f"\nleader election: {leader_id} killed; {standby_id} acquired the Lease "
                f"{takeover:.2f}s later (seen by a 100 ms Lease sampler after {observed:.2f}s); the work "
                f"produced at the kill was scaled for {scaled:.2f}s after it "
                f"({' '.join(LEASE_TIMING)})"
            )
            assert takeover <= TAKEOVER_BOUND, (
                f"takeover took {takeover:.2f}s; Lease versions since the kill (read at, version, holder, "
                f"renewTime): {[v for v in sampler.versions if v[0] >= killed_at]}; "
                f"{standby_id} log tail:\n{standby.tail(15)}"
            )
            assert await leader_gauge(standby) == 1

            # The Event follows the scale patch just seen: read until it is there.
            async def since_acquired() -> list[dict[str, Any]]:
                return [
                    e
                    for e in await events_of(kube, namespace, name)
                    if parse_time(e["eventTime"]) >= acquired
                ]

            after = await eventually(
                since_acquired,
                lambda found: [e["reason"] for e in found] == ["ScaledUp"],
                timeout=10,
                what="the new leader's ScaledUp Event",
            )
            assert after[0]["reportingInstance"] == standby_id
            assert any(p["replicas"] == 5 for p in scale_patches(standby)), standby.tail()
    finally:
        for process in processes.values():
            if process.proc is not None:
                process.stop()

    # Never two writers: every Event and every scale patch came from the Lease holder of its moment.
    holders = [(s.holder, s.acquired) for s in sampler.samples if s.holder]
    assert [h for h, _ in holders][:2] == [leader_id, standby_id], sampler.samples
    events = await events_of(kube, namespace, name)
    wrong = [
        (e["eventTime"], e["reason"], e["reportingInstance"], sampler.holder_at(parse_time(e["eventTime"])))
        for e in events
        if e["reportingInstance"] != sampler.holder_at(parse_time(e["eventTime"]))
    ]
    assert not wrong, f"Events from a replica that did not hold the Lease: {wrong}"
    for identity, process in processes.items():
        for patch in scale_patches(process):
            holder = sampler.holder_at(parse_time(patch["timestamp"]))
            assert holder == identity, f"{identity} patched the scale while {holder} held the Lease: {patch}"
