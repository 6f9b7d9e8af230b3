"""Reaction time: from lag becoming visible to the controller's scale patch, with 1 and 200 targets.

t0 is when Kafka acknowledged the producer's send of the record that creates the lag (``acks=1`` on the
single-broker devstack: the record is then below the high watermark, so ListOffsets sees it); t1 is the
timestamp of the controller's ``scaled`` log event (it is logged right after the scale patch returned). Both
come from the same machine clock. The measured target is a Deployment at 0 replicas whose group has
committed up to the end of a 1-partition topic; one record makes the lag 1 and wakes it (0 -> 1). Between
repetitions the group's offset is committed to the end again and ``scale-to-zero-after: 1s`` takes the
target back to 0; then the bench waits a random fraction of the interval, so the record lands at a uniform
phase of the tick.

With a tick interval T and a uniform phase, the expected reaction is T/2 (the wait for the next tick) plus
the batched lag read and the patch: about 0.5 s at the default 1 s interval. The other targets of the
200-target run have lag 0 (an empty topic read from ``earliest``) and ``max-replicas: 0`` as a safety belt,
so they cost a read and a decision per tick but never start a pod.

Each run writes its interval's rows into bench/results/reaction.{json,md}, keeping the other intervals':

    python -m bench.reaction                      # interval 1 s, 1 and 200 targets, 20 repetitions each
    python -m bench.reaction --interval 0.25
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kubernetes_asyncio import client as kube_client

from autoscaler.observability.log_events import ControlLog
from devstack.config import layout as devstack_layout
from devstack.harness import (
    Devstack,
    create_deployments,
    create_topic,
    delete_topics,
    deployment,
    kube_api,
    python_container,
    target_annotations,
    wait_last_active,
)
from devstack.processes import Process, controller

RESULTS = Path(__file__).resolve().parent / "results"
MEASURED = "measured"


def sleeper(name: str) -> dict[str, Any]:
    """A container that only sleeps: the bench needs the pod to exist, not to consume."""
    container = python_container(name, "time", [])
    container["command"] = [container["command"][0], "-c", "import time; time.sleep(3600)"]
    container["args"] = []
    return container


def at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["timestamp"]).timestamp()


async def wait_for(
    process: Process, event: str, count: int, *, timeout: float, **match: Any
) -> dict[str, Any]:
    """The ``count``-th log entry (1-based) of ``event`` for the measured target that matches ``match``."""
    deadline = time.monotonic() + timeout
    while True:
        process.assert_alive()
        found = process.logged(event, deployment=MEASURED, **match)
        if len(found) >= count:
            return found[count - 1]
        if time.monotonic() > deadline:
            raise SystemExit(
                f"no {event} {match} #{count} within {timeout}s; controller log:\n{process.tail()}"
            )
        await asyncio.sleep(0.05)


def summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98] if len(ordered) > 1 else ordered[0]
    return {
        "p50": round(statistics.median(ordered), 4),
        "p99": round(p99, 4),
        "mean": round(statistics.fmean(ordered), 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
    }


async def measure(
    *,
    stack: Devstack,
    api: kube_client.ApiClient,
    targets: int,
    interval: float,
    repetitions: int,
    logs: Path,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    namespace = f"bench-react-{run_id}"
    topic, empty, group = f"bench-react-{run_id}", f"bench-react-{run_id}-empty", f"bench-react-{run_id}"
    bootstrap = stack.kafka_bootstrap
    core = kube_client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": namespace}})
    await create_topic(bootstrap, topic, 1)
    await create_topic(bootstrap, empty, 1)
    tp = TopicPartition(topic, 0)
    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    process: Process | None = None
    try:
        await committer.start()
        committer.assign([tp])
        await committer.commit({tp: 0})
        await producer.start()
        manifests = [
            deployment(
                MEASURED,
                sleeper(MEASURED),
                replicas=0,
                annotations=target_annotations(
                    kafka_group=group,
                    kafka_topics=topic,
                    lag_per_replica="10",
                    scale_to_zero_after="1s",
                    scale_down_window="0s",
                ),
            ),
            *(
                deployment(
                    f"idle-{i:03d}",
                    sleeper(f"idle-{i:03d}"),
                    replicas=0,
                    annotations=target_annotations(
                        kafka_group=f"{group}-idle-{i:03d}",
                        kafka_topics=empty,
                        offset_reset_policy="earliest",
                        max_replicas="0",
                    ),
                )
                for i in range(1, targets)
            ),
        ]
        await create_deployments(api, namespace, manifests)
        log_path = logs / f"reaction-{interval:g}s-{targets}.log"
        log_path.unlink(missing_ok=True)
        process = controller(
            stack, log_path, namespaces=[namespace], interval=interval, identity=f"bench-{run_id}"
        ).start()
        await process.wait_port("metrics")
        await wait_for(process, ControlLog.DECISION_CHANGED, 1, timeout=60, desired=0)
        # At its first tick the controller writes last-active on every idle target: let that burst of
        # writes finish before measuring.
        await wait_last_active(api, namespace, timeout=120)
        await asyncio.sleep(2 * interval)

        reactions, waits, patches = [], [], []
        for rep in range(1, repetitions + 1):
            await asyncio.sleep(random.uniform(0, interval))  # a uniform phase against the tick
            sent = await (await producer.send(topic, b"work", partition=0))
            t0 = time.time()
            scaled = await wait_for(process, ControlLog.TARGET_SCALED, rep, timeout=30, replicas_from=0)
            decided = await wait_for(process, ControlLog.DECISION_CHANGED, rep, timeout=5, rule="activate")
            reactions.append(at(scaled) - t0)
            waits.append(at(decided) - t0)
            patches.append(at(scaled) - at(decided))
            await committer.commit({tp: sent.offset + 1})
            await wait_for(process, ControlLog.TARGET_SCALED, rep, timeout=30, replicas_to=0)
            print(
                f"  {targets} targets, interval {interval:g}s: #{rep} reaction {reactions[-1] * 1000:.0f} ms",
                file=sys.stderr,
            )
        ticks = await process.metric("queue_autoscaler_tick_duration_seconds_sum")
        count = await process.metric("queue_autoscaler_tick_duration_seconds_count")
        return {
            "interval_s": interval,
            "targets": targets,
            "repetitions": repetitions,
            "reaction_s": summary(reactions),
            "until_decision_s": summary(waits),
            "decision_to_patch_s": summary(patches),
            "expected_mean_s": round(interval / 2, 4),
            "tick_duration_mean_ms": round(1000 * ticks / count, 2) if ticks and count else None,
            "samples_s": [round(r, 4) for r in reactions],
        }
    finally:
        if process is not None:
            process.stop()
        await producer.stop()
        await committer.stop()
        with contextlib.suppress(kube_client.ApiException):
            await core.delete_namespace(namespace)
        await delete_topics(bootstrap, [topic, empty])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Reaction time: lag visible → scale patch",
        "",
        "t0: Kafka acknowledged the record that creates the lag (0 → 1 replica); t1: the controller's "
        "`scaled` log timestamp, right after the scale patch returned (same machine clock). Each repetition "
        "lands at a uniform random phase of the tick. With interval T the expected mean is T/2 (the wait for "
        "the next tick) plus the batched read, the decision and the patch.",
        "",
        "| interval | annotated Deployments | repetitions | reaction p50 | reaction p99 "
        "| mean (expected ≈ T/2 + read + patch) | min … max | tick → patch p50 | tick duration mean "
        "| measured | command |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in sorted(report["runs"].values(), key=lambda r: (-r["interval_s"], r["targets"])):
        r = run["reaction_s"]
        cells = [
            f"{run['interval_s']:g} s",
            str(run["targets"]),
            str(run["repetitions"]),
            ms(r["p50"]),
            ms(r["p99"]),
            f"{ms(r['mean'])} (T/2 = {ms(run['expected_mean_s'])})",
            f"{ms(r['min'])} … {ms(r['max'])}",
            ms(run["decision_to_patch_s"]["p50"]),
            f"{run['tick_duration_mean_ms']} ms",
            run["measured_at"],
            f"`{run['command']}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "p99 of so few samples (see repetitions) is interpolated between the two largest: read it as the "
        "maximum. "
        "`tick → patch` is from the controller's `decision` log (the tick that saw the lag) to its "
        "`scaled` log.",
        "",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    stack = Devstack(devstack_layout())
    results = []
    async with kube_api(stack) as api:
        for targets in sorted({int(x) for x in args.targets.split(",")}):
            print(f"{targets} annotated Deployments, interval {args.interval:g}s", file=sys.stderr)
            result = await measure(
                stack=stack,
                api=api,
                targets=targets,
                interval=args.interval,
                repetitions=args.repetitions,
                logs=Path(args.logs),
            )
            result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            result["command"] = " ".join(["python -m bench.reaction", *sys.argv[1:]])
            results.append(result)
            reaction = result["reaction_s"]
            print(
                f"{targets} targets: p50 {ms(reaction['p50'])}, p99 {ms(reaction['p99'])}, "
                f"mean {ms(reaction['mean'])}",
                file=sys.stderr,
            )
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.reaction",
        description="Reaction time from lag becoming visible (the producer's send acknowledged) to the "
        "controller's scale patch (its 'scaled' log), p50/p99, on the devstack.",
    )
    p.add_argument("--interval", type=float, default=1.0, help="controller tick interval, s (default 1)")
    p.add_argument(
        "--targets", default="1,200", help="annotated Deployments per run, comma list (default 1,200)"
    )
    p.add_argument("--repetitions", type=int, default=20, help="measurements per run (default 20)")
    p.add_argument("--out", default=str(RESULTS), help="results directory (default bench/results)")
    p.add_argument("--logs", default="/tmp/queue-autoscaler-bench", help="where the controller logs go")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    results = asyncio.run(run(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "reaction.json"
    report: dict[str, Any] = {"runs": {}}
    if path.exists():
        with contextlib.suppress(ValueError):
            report = json.loads(path.read_text())
    for result in results:
        report["runs"][f"interval={result['interval_s']:g}s,targets={result['targets']}"] = result
    path.write_text(json.dumps(report, indent=2) + "\n")
    (out / "reaction.md").write_text(markdown(report))
    print(f"wrote {path} and {out / 'reaction.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
