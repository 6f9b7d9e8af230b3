"""Requests per controller tick for 1, 100 and 1,000 RabbitMQ queues, Redis streams and NATS consumers.

One tick of the controller reads every target of one server in one batched read. For each count this
benchmark builds that many queues (one vhost), streams (each with a consumer group) or durable consumers
(100 per stream) on the devstack's servers, then runs one warm-up read and ``--reads`` measured reads of
all of them, counting requests with the readers' own counter (``queue_autoscaler_source_requests_total``,
read back from the registry) and timing each read. For Redis the server's own ``INFO commandstats`` gives
the commands it ran (one XINFO GROUPS per stream, all in the one pipelined round trip we count).

The "KEDA" column is a model, not a measurement: KEDA's RabbitMQ, Redis Streams and NATS JetStream scalers
each evaluate one ScaledObject at a time, one management-API request / XINFO / /jsz request per trigger
per evaluation (its regex mode adds a page limit: a pattern over more than one page is an error).

    python -m bench.source_requests [--counts 1,100,1000] [--reads 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import nats
import redis.asyncio as aioredis
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, StorageType
from prometheus_client import CollectorRegistry

from autoscaler.errors import SourceError
from autoscaler.sources import nats as nats_source
from autoscaler.sources import rabbitmq
from autoscaler.sources import redis as redis_source
from devstack import rabbitmq_server
from devstack.config import layout as devstack_layout

RESULTS = Path(__file__).resolve().parent / "results"
CONSUMERS_PER_STREAM = 100


def _sample(registry: CollectorRegistry, source: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "queue_autoscaler_source_requests_total" and sample.labels["source"] == source:
                found[sample.labels["api"]] = int(sample.value)
    return found


async def _measure(
    read: Callable[[], Awaitable[dict[Any, Any]]], *, reads: int, requests: Callable[[], int]
) -> tuple[float, float, int]:
    """(requests per read, p50 ms, errors in the last read) over ``reads`` reads after one warm-up."""
    await read()
    before = requests()
    seconds: list[float] = []
    errors = 0
    for _ in range(reads):
        started = time.perf_counter()
        result = await read()
        seconds.append(time.perf_counter() - started)
        errors = sum(isinstance(r, SourceError) for r in result.values())
    return (requests() - before) / reads, statistics.median(seconds) * 1000, errors


async def _management(method: str, path: str, body: dict[str, str] | None = None) -> None:
    stack = devstack_layout()
    auth = {"Authorization": aiohttp.encode_basic_auth(rabbitmq_server.USERNAME, rabbitmq_server.PASSWORD)}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"{stack.rabbitmq_management_url}{path}", headers=auth, json=body or {}
        ) as answer,
    ):
        if answer.status >= 300 and not (method == "DELETE" and answer.status == 404):
            raise RuntimeError(f"{method} {path}: HTTP {answer.status} {await answer.text()}")


async def bench_rabbitmq(count: int, reads: int) -> dict[str, Any]:
    """``count`` queues with one ready message each, in a vhost of their own."""
    stack = devstack_layout()
    vhost = f"bench-{uuid.uuid4().hex[:6]}"
    names = [f"q-{i:04d}" for i in range(count)]
    user = rabbitmq_server.USERNAME
    await _management("PUT", f"/api/vhosts/{vhost}")
    await _management(
        "PUT", f"/api/permissions/{vhost}/{user}", {"configure": ".*", "write": ".*", "read": ".*"}
    )
    url = f"amqp://{user}:{rabbitmq_server.PASSWORD}@127.0.0.1:{stack.rabbitmq_port}/{vhost}"
    try:
        connection = await aio_pika.connect(url)
    except BaseException:
        await _management("DELETE", f"/api/vhosts/{vhost}")
        raise
    try:
        channel = await connection.channel()
        for name in names:
            await channel.declare_queue(name, auto_delete=False)
            await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
        registry = CollectorRegistry()
        async with rabbitmq.QueueReader(
            stack.rabbitmq_management_url,
            username=rabbitmq_server.USERNAME,
            password=lambda: rabbitmq_server.PASSWORD,
            registry=registry,
        ) as reader:
            queries = [rabbitmq.QueueQuery(vhost, (name,)) for name in names]
            per_read, p50, errors = await _measure(
                lambda: reader.read(queries=queries), reads=reads, requests=lambda: reader.metrics.requests
            )
            counted = _sample(registry, "rabbitmq")
    finally:
        await connection.close()
        await _management("DELETE", f"/api/vhosts/{vhost}")
    return {
        "source": "rabbitmq",
        "targets": count,
        "requests_per_tick": per_read,
        "expected": math.ceil(max(count, 1) / 500),
        "registry_total": sum(counted.values()),
        "read_p50_ms": round(p50, 2),
        "errors": errors,
        "keda_requests": count,
    }


async def bench_redis(count: int, reads: int) -> dict[str, Any]:
    stack = devstack_layout()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    streams = [f"{prefix}-{i:04d}" for i in range(count)]
    client = aioredis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xadd(stream, {"n": "1"})
            pipe.xgroup_create(stream, "workers", id="0")
        await pipe.execute()
        registry = CollectorRegistry()
        async with redis_source.StreamReader(stack.redis_url, registry=registry) as reader:
            queries = [redis_source.StreamQuery(stream, "workers") for stream in streams]
            await client.config_resetstat()
            per_read, p50, errors = await _measure(
                lambda: reader.read(queries=queries), reads=reads, requests=lambda: reader.metrics.requests
            )
            stats = await client.info("commandstats")
        await client.delete(*streams)
    finally:
        await client.aclose()
    xinfo = stats.get("cmdstat_xinfo|groups", {}).get("calls", 0)
    return {
        "source": "redis",
        "targets": count,
        "requests_per_tick": per_read,
        "expected": 1,
        "registry_total": sum(_sample(registry, "redis").values()),
        "server_xinfo_groups_per_tick": xinfo / (reads + 1),
        "read_p50_ms": round(p50, 2),
        "errors": errors,
        "keda_requests": count,
    }


async def bench_nats(count: int, reads: int) -> dict[str, Any]:
    stack = devstack_layout()
    prefix = f"bench_{uuid.uuid4().hex[:6]}"
    client = await nats.connect(stack.nats_url)
    js = client.jetstream()
    streams = [f"{prefix}_{s}" for s in range(math.ceil(count / CONSUMERS_PER_STREAM))]
    try:
        queries: list[nats_source.ConsumerQuery] = []
        for s, stream in enumerate(streams):
            await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=StorageType.MEMORY)
            await js.publish(f"{stream}.x", b"x")
            for c in range(min(CONSUMERS_PER_STREAM, count - s * CONSUMERS_PER_STREAM)):
                name = f"c{c:03d}"
                await js.add_consumer(
                    stream, ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT)
                )
                queries.append(nats_source.ConsumerQuery(stream, name))
        registry = CollectorRegistry()
        async with nats_source.ConsumerReader(stack.nats_monitoring_url, registry=registry) as reader:
            per_read, p50, errors = await _measure(
                lambda: reader.read(queries=queries), reads=reads, requests=lambda: reader.metrics.requests
            )
        for stream in streams:
            await js.delete_stream(stream)
    finally:
        await client.close()
    return {
        "source": "nats",
        "targets": count,
        "streams": len(streams),
        "requests_per_tick": per_read,
        "expected": 1,
        "registry_total": sum(_sample(registry, "nats").values()),
        "read_p50_ms": round(p50, 2),
        "errors": errors,
        "keda_requests": count,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# RabbitMQ, Redis Streams and NATS JetStream requests per controller tick",
        "",
        f"Measured {report['measured']} on the devstack's servers (RabbitMQ 3.10, Redis 7.0, NATS 2.9). "
        f"Command: `{report['command']}`. Machine: {report['cpus']} CPUs, 1-minute load average "
        f"{report['load_average_1m']} at the end (shared with other work: latencies are upper bounds).",
        "",
        f"One tick = one batched read of every target of one server; after one warm-up read, "
        f"{report['reads']} reads were measured. Requests are the readers' own counter "
        "(`queue_autoscaler_source_requests_total`, read back from the registry).",
        "",
        "| source | targets | ours: requests per tick | expected | read p50 ms | errors | "
        "KEDA: requests per evaluation (one per ScaledObject, per its design — a model, not measured) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['source']} | {row['targets']:,} | {row['requests_per_tick']:g} | {row['expected']} | "
            f"{row['read_p50_ms']:.2f} | {row['errors']} | {row['keda_requests']:,} |"
        )
    lines += [
        "",
        "Expected: RabbitMQ ⌈queues / 500⌉ per vhost (one GET per page of 500 with live queue totals and "
        "three columns); Redis one pipelined round trip per server; NATS one `/jsz?consumers=true&acc=` "
        "per account.",
        "",
        "Redis server side (`INFO commandstats`): XINFO GROUPS calls per tick = "
        + ", ".join(
            f"{r['targets']:,} streams: {r['server_xinfo_groups_per_tick']:g}"
            for r in report["rows"]
            if r["source"] == "redis"
        )
        + " (all in the one round trip counted above).",
        "",
    ]
    return "\n".join(lines)


async def run(counts: Sequence[int], reads: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for bench in (bench_rabbitmq, bench_redis, bench_nats):
        for count in counts:
            row = await bench(count, reads)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "reads": reads,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.source_requests", description=__doc__)
    p.add_argument("--counts", default="1,100,1000", help="comma list of target counts (default 1,100,1000)")
    p.add_argument("--reads", type=int, default=20, help="measured reads per count (default 20)")
    p.add_argument("--out", default=str(RESULTS), help="results directory (default bench/results)")
    args = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    counts = [int(c) for c in args.counts.split(",")]
    report = asyncio.run(run(counts, args.reads))
    report["command"] = "python -m bench.source_requests" + (" " + " ".join(argv) if argv else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "source_requests.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "source_requests.md").write_text(markdown(report))
    bad = [r for r in report["rows"] if r["errors"] or r["requests_per_tick"] != r["expected"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
