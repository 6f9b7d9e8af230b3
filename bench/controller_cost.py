"""Controller cost at scale: CPU per tick and resident memory with 1,000 annotated Deployments.

The bench creates one namespace with ``--targets`` Deployments at 0 replicas, each with its own consumer
group on ``--topics`` shared topics (the groups have committed offsets at the end of the topics, so there
is no lag and no pod ever starts; ``max-replicas: 0`` is a safety belt). It starts the real controller
(``queue-autoscaler run``) on that namespace, lets it settle, then reads over ``--ticks`` ticks:

* CPU: utime + stime of the controller process from /proc/<pid>/stat, divided by the ticks it ran;
* RSS: VmRSS (and the peak, VmHWM) from /proc/<pid>/status at the end;
* the tick duration histogram and the Kafka request counter from its /metrics.

/metrics is scraped only before and after the window (a scrape of 1,000 targets' series costs CPU too).
Everything is deleted afterwards: the namespace, the topics and with them the groups' offsets.

    python -m bench.controller_cost [--targets 1000] [--ticks 60] [--interval 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kubernetes_asyncio import client as kube_client
from prometheus_client.parser import text_string_to_metric_families

from devstack.config import layout as devstack_layout
from devstack.harness import (
    Devstack,
    create_deployments,
    delete_topics,
    deployment,
    kube_api,
    python_container,
    wait_last_active,
)
from devstack.processes import Process, controller

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "queue-autoscaler.dev/"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def sleeper(name: str) -> dict[str, Any]:
    container = python_container(name, "time", [])
    container["command"] = [container["command"][0], "-c", "import time; time.sleep(3600)"]
    container["args"] = []
    return container


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def memory_kib(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


async def scrape(port: int) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def histogram_quantile(before: Samples, after: Samples, name: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of the observations between two scrapes."""
    buckets = sorted(
        (float(dict(labels)["le"]), v - before.get((n, labels), 0.0))
        for (n, labels), v in after.items()
        if n == f"{name}_bucket"
    )
    if not buckets or buckets[-1][1] <= 0:
        return None
    wanted = q * buckets[-1][1]
    return next(le for le, count in buckets if count >= wanted)


async def setup_kafka(bootstrap: str, topics: Sequence[str], groups: Sequence[str], partitions: int) -> None:
    """Creates the (empty) topics and commits offset 0 on every partition of each group's topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()
    gate = asyncio.Semaphore(32)

    async def commit(i: int, group: str) -> None:
        tps = [TopicPartition(topics[i % len(topics)], p) for p in range(partitions)]
        async with gate:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
            await consumer.start()
            try:
                consumer.assign(tps)
                await consumer.commit(dict.fromkeys(tps, 0))
            finally:
                await consumer.stop()

    await asyncio.gather(*(commit(i, g) for i, g in enumerate(groups)))


async def wait_targets(process: Process, port: int, targets: int, *, timeout: float) -> Samples:
    """Waits until the controller watches every target and has ticked a few times with them."""
    deadline = time.monotonic() + timeout
    while True:
        process.assert_alive()
        samples = await scrape(port)
        if value(samples, "queue_autoscaler_targets") >= targets and (
            value(samples, "queue_autoscaler_tick_duration_seconds_count") >= 3
        ):
            return samples
        if time.monotonic() > deadline:
            raise SystemExit(f"the controller did not see {targets} targets in {timeout}s:\n{process.tail()}")
        await asyncio.sleep(1)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    stack = Devstack(devstack_layout())
    run_id = uuid.uuid4().hex[:8]
    namespace = f"bench-cost-{run_id}"
    topics = [f"bench-cost-{run_id}-t{i}" for i in range(args.topics)]
    groups = [f"bench-cost-{run_id}-g{i:04d}" for i in range(args.targets)]
    bootstrap = stack.kafka_bootstrap
    process: Process | None = None
    async with kube_api(stack) as api:
        core = kube_client.CoreV1Api(api)
        await core.create_namespace({"metadata": {"name": namespace}})
        try:
            started = time.monotonic()
            await setup_kafka(bootstrap, topics, groups, args.partitions)
            manifests = [
                deployment(
                    f"target-{i:04d}",
                    sleeper(f"target-{i:04d}"),
                    replicas=0,
                    annotations={
                        PREFIX + "kafka-group": group,
                        PREFIX + "kafka-topics": topics[i % len(topics)],
                        PREFIX + "max-replicas": "0",
                    },
                )
                for i, group in enumerate(groups)
            ]
            await create_deployments(api, namespace, manifests)
            print(
                f"{args.targets} Deployments and groups ready in {time.monotonic() - started:.0f}s",
                file=sys.stderr,
            )

            log_path = Path(args.logs) / "controller_cost.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.unlink(missing_ok=True)
            process = controller(
                stack, log_path, namespaces=[namespace], interval=args.interval, identity=f"bench-{run_id}"
            ).start()
            assert process.proc is not None
            pid = process.proc.pid
            port = await process.wait_port("metrics")
            await wait_targets(process, port, args.targets, timeout=120)
            # At its first tick the controller writes last-active on every idle target: let that burst of
            # writes finish before measuring.
            await wait_last_active(api, namespace, timeout=120)
            startup_cpu = cpu_seconds(pid)
            startup_rss = memory_kib(pid)
            await asyncio.sleep(5 * args.interval)  # settle: caches warm, first decisions logged

            before = await scrape(port)
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(args.ticks * args.interval)
            cpu1, wall1 = cpu_seconds(pid), time.monotonic()
            memory = memory_kib(pid)
            after = await scrape(port)
            process.assert_alive()
        finally:
            if process is not None:
                process.stop()
            with contextlib.suppress(kube_client.ApiException):
                await core.delete_namespace(namespace)
            await delete_topics(bootstrap, topics)

    name = "queue_autoscaler_tick_duration_seconds"
    ticks = value(after, f"{name}_count") - value(before, f"{name}_count")
    tick_sum = value(after, f"{name}_sum") - value(before, f"{name}_sum")
    kafka = total(after, "queue_autoscaler_kafka_requests_total") - total(
        before, "queue_autoscaler_kafka_requests_total"
    )
    patches = total(after, "queue_autoscaler_scale_patches_total") - total(
        before, "queue_autoscaler_scale_patches_total"
    )
    cpu = cpu1 - cpu0
    p50 = histogram_quantile(before, after, name, 0.5)
    p99 = histogram_quantile(before, after, name, 0.99)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.controller_cost", *sys.argv[1:]]),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "targets": args.targets,
        "topics": args.topics,
        "partitions_per_topic": args.partitions,
        "interval_s": args.interval,
        "window_s": round(wall1 - wall0, 2),
        "ticks": int(ticks),
        "cpu_ms_per_tick": round(1000 * cpu / ticks, 2) if ticks else None,
        "cpu_share_of_one_core": round(cpu / (wall1 - wall0), 4),
        "tick_duration_mean_ms": round(1000 * tick_sum / ticks, 2) if ticks else None,
        "tick_duration_p50_bucket_ms": None if p50 is None else round(1000 * p50, 2),
        "tick_duration_p99_bucket_ms": None if p99 is None else round(1000 * p99, 2),
        "kafka_requests_per_tick": round(kafka / ticks, 2) if ticks else None,
        "scale_patches_in_window": int(patches),
        "rss_mib": round(memory.get("VmRSS", 0) / 1024, 1),
        "peak_rss_mib": round(memory.get("VmHWM", 0) / 1024, 1),
        "startup_cpu_s": round(startup_cpu, 2),
        "startup_rss_mib": round(startup_rss.get("VmRSS", 0) / 1024, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    r = report
    return "\n".join(
        [
            "# Controller cost at 1,000 targets",
            "",
            f"Measured {r['measured_at']} on {r['host']['cpus']} CPUs: `{r['command']}`.",
            "",
            f"{r['targets']:,} annotated Deployments at 0 replicas in one namespace, each with its own "
            f"consumer group on {r['topics']} shared topics × {r['partitions_per_topic']} partitions (no "
            f"lag, so no patch: {r['scale_patches_in_window']} in the window). The real controller process, "
            f"interval {r['interval_s']:g} s, measured over {r['ticks']} ticks ({r['window_s']} s) after "
            "start-up.",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| CPU per tick (utime + stime / ticks) | {r['cpu_ms_per_tick']} ms |",
            f"| CPU share of one core | {100 * r['cpu_share_of_one_core']:.1f} % |",
            f"| RSS (VmRSS) at the end | {r['rss_mib']} MiB |",
            f"| peak RSS (VmHWM) | {r['peak_rss_mib']} MiB |",
            f"| tick duration, mean (histogram sum / count) | {r['tick_duration_mean_ms']} ms |",
            "| tick duration, p50 / p99 (histogram bucket upper bound) | "
            f"{r['tick_duration_p50_bucket_ms']} / {r['tick_duration_p99_bucket_ms']} ms |",
            f"| Kafka requests per tick | {r['kafka_requests_per_tick']} |",
            f"| start-up: CPU until the first ticks with every target / RSS then | {r['startup_cpu_s']} s / "
            f"{r['startup_rss_mib']} MiB |",
            "",
            "CPU per tick is everything the process spent in the window (the Deployment watch, the read, "
            "1,000 decisions, metric updates) divided by the ticks; /metrics was scraped only outside the "
            "window. /proc CPU times have a 10 ms resolution, negligible over the window.",
            "",
        ]
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.controller_cost",
        description="CPU per tick and RSS of the real controller with many annotated Deployments "
        "(at 0 replicas, each with its own consumer group on shared topics) on the devstack.",
    )
    p.add_argument("--targets", type=int, default=1000, help="annotated Deployments (default %(default)s)")
    p.add_argument("--ticks", type=int, default=60, help="ticks in the measured window (default %(default)s)")
    p.add_argument("--interval", type=float, default=1.0, help="tick interval, s (default %(default)s)")
    p.add_argument("--topics", type=int, default=10, help="shared topics (default %(default)s)")
    p.add_argument("--partitions", type=int, default=6, help="partitions per topic (default %(default)s)")
    p.add_argument("--out", default=str(RESULTS), help="results directory (default bench/results)")
    p.add_argument("--logs", default="/tmp/queue-autoscaler-bench", help="where the controller log goes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = asyncio.run(measure(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "controller_cost.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "controller_cost.md").write_text(markdown(report))
    print(json.dumps(report, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
