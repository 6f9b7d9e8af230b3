"""The event broker's speed on the devstack: ingress, dispatcher, end to end.

Runs the real ``broker-ingress`` and ``dispatcher`` processes for a Broker in a fresh namespace (the
integration tests' set-up, ``devstack.eventing_harness``), with subscribers served by this process on
127.0.0.1:

- ingress: ``--events`` binary-mode events POSTed over 32 connections; events/s and the p50/p99 time from
  sending a request to its 202 (Kafka acknowledged with acks=all);
- dispatcher: the ingress's events are a backlog for one Trigger (posted while the dispatcher is stopped);
  then the dispatcher is started: events/s delivered to a subscriber that answers at once;
- end to end: events posted at a fixed rate (100/s and 1,000/s, for ``--seconds``); p50/p99 of subscriber
  receive time minus POST send time (one machine clock). A rate the ingress cannot keep is reported as
  the rate achieved.

Writes bench/results/eventing.{json,md}:

    python -m bench.eventing [--events 5000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as kube_client
from kubernetes_asyncio import config as kube_config

from devstack.config import layout as devstack_layout
from devstack.eventing_harness import BILLING, Broker, Received, broker_processes, install_crds, subscriber
from devstack.harness import Devstack
from devstack.kube_rest import Rest
from devstack.processes import Process

RESULTS = Path(__file__).resolve().parent / "results"
CONNECTIONS = 32


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def headers_for(event_id: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/bench", "ce-type": BILLING}


async def post_many(url: str, ids: list[str], *, connections: int = CONNECTIONS) -> tuple[float, list[float]]:
    """Posts every id; returns the wall time and each request's latency."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for one in ids:
        queue.put_nowait(one)
    latencies: list[float] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            event_id = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, headers=headers_for(event_id), data=b"{}") as response:
                assert response.status == 202, response.status
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return time.perf_counter() - began, latencies


async def paced(url: str, rate: float, seconds: float) -> tuple[dict[str, float], float]:
    """Posts at ``rate`` events/s for ``seconds``; returns each id's send time and the rate achieved."""
    sent: dict[str, float] = {}
    total = int(rate * seconds)
    began = time.time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS * 4)) as session:

        async def one(event_id: str) -> None:
            sent[event_id] = time.time()
            async with session.post(url, headers=headers_for(event_id), data=b"{}") as response:
                assert response.status == 202, response.status

        tasks = []
        for n in range(total):
            delay = began + n / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(uuid.uuid4().hex)))
        await asyncio.gather(*tasks)
    return sent, total / (time.time() - began)


@contextlib.asynccontextmanager
async def stack(devstack: Devstack, work: Path) -> AsyncIterator[Broker]:
    configuration = kube_client.Configuration()
    await kube_config.load_kube_config(
        config_file=str(devstack.kubeconfig), client_configuration=configuration
    )
    async with kube_client.ApiClient(configuration) as api:
        core = kube_client.CoreV1Api(api)
        namespace = f"bench-eventing-{uuid.uuid4().hex[:6]}"
        await core.create_namespace({"metadata": {"name": namespace}})
        try:
            await install_crds(devstack.layout.kustomize, Rest(api))
            async with broker_processes(devstack, api, namespace, work) as broker:
                yield broker
        finally:
            await core.delete_namespace(namespace)


def make_work_dir() -> Path:
    work = Path(f"/tmp/bench-eventing-{uuid.uuid4().hex[:6]}")
    work.mkdir(parents=True)
    return work


def all_received(received: list[Received], wanted: set[str]) -> bool:
    return {r.id for r in received} >= wanted


async def until(predicate: Callable[[], bool], *, every: float = 0.05) -> None:
    """Polls ``predicate`` (the subscriber's record is a plain list, with no event to wait on)."""
    while not predicate():  # noqa: ASYNC110
        await asyncio.sleep(every)


async def measure(events: int, seconds: float) -> dict[str, Any]:
    devstack = Devstack(devstack_layout())
    work = make_work_dir()
    rows: dict[str, Any] = {}
    async with stack(devstack, work) as broker, subscriber() as sink:
        await broker.trigger("bench", {"subscriber": {"uri": sink.url}})
        await broker.ready_trigger("bench")

        # The ingress alone (the dispatcher stopped, so the subscriber in this process is idle); its
        # events are the backlog the dispatcher then drains.
        broker.dispatcher.stop()
        wall, latencies = await post_many(broker.url, [uuid.uuid4().hex for _ in range(events)])
        rows["ingress"] = {
            "events": events,
            "connections": CONNECTIONS,
            "events_per_s": round(events / wall),
            "p50_ms": round(quantile(latencies, 0.5) * 1000, 1),
            "p99_ms": round(quantile(latencies, 0.99) * 1000, 1),
        }
        print(rows["ingress"], file=sys.stderr)
        restarted = Process(broker.dispatcher.argv, work / "dispatcher-2.log", broker.dispatcher.env).start()
        try:
            await until(lambda: len(sink.received) >= events)
            times = [r.at for r in sink.received]
            span = max(times) - min(times)
            rows["dispatcher"] = {"events": events, "events_per_s": round(events / span)}
            print(rows["dispatcher"], file=sys.stderr)

            for rate in (100.0, 1000.0):
                sink.received.clear()
                loop_offset = time.time() - asyncio.get_running_loop().time()
                sent, achieved = await paced(broker.url, rate, seconds)
                await until(functools.partial(all_received, sink.received, set(sent)), every=0.2)
                first: dict[str, float] = {}
                for r in sink.received:
                    first.setdefault(r.id, r.at + loop_offset)
                lat = [first[i] - sent[i] for i in sent]
                rows[f"end_to_end_{int(rate)}"] = {
                    "rate_asked": rate,
                    "rate_achieved": round(achieved),
                    "events": len(sent),
                    "p50_ms": round(quantile(lat, 0.5) * 1000, 1),
                    "p99_ms": round(quantile(lat, 0.99) * 1000, 1),
                }
                print(rows[f"end_to_end_{int(rate)}"], file=sys.stderr)
        finally:
            restarted.stop()
    return rows


def write(rows: dict[str, Any], command: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "eventing.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    ingress, dispatch = rows["ingress"], rows["dispatcher"]
    lines = [
        "# Event broker on the devstack",
        "",
        f"`{command}` (2 cores shared with other work, load average about 10 during the run; ingress, "
        "dispatcher, Kafka, subscriber and load generator on one machine)",
        "",
        "| measurement | result |",
        "|---|---|",
        f"| ingress, {ingress['events']} events over {ingress['connections']} connections | "
        f"{ingress['events_per_s']} events/s; accept p50 {ingress['p50_ms']} ms, "
        f"p99 {ingress['p99_ms']} ms |",
        f"| dispatcher, a backlog of {dispatch['events']} to a fast subscriber | "
        f"{dispatch['events_per_s']} events/s |",
    ]
    for key in ("end_to_end_100", "end_to_end_1000"):
        row = rows[key]
        lines.append(
            f"| end to end (POST -> subscriber) at {int(row['rate_asked'])}/s asked, "
            f"{row['rate_achieved']}/s achieved, {row['events']} events | "
            f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms |"
        )
    (RESULTS / "eventing.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.events, args.seconds))
    command = (
        "python -m bench.eventing"
        + (f" --events {args.events}" if args.events != 5000 else "")
        + (f" --seconds {args.seconds:g}" if args.seconds != 10.0 else "")
    )
    write(rows, command)
    print((RESULTS / "eventing.md").read_text())


if __name__ == "__main__":
    main()
