"""The simulator against reality: one trace replayed on the devstack with the real controller and workers.

    python -m bench.sim.validate [--peak 120] [--width 60] [--rate 20] [--partitions 8]

Creates a namespace and a topic of its own, a Deployment of ``devstack.workers.kafka_worker`` pods (each
taking ``--rate`` records/s) at 0 replicas annotated for ``drain-within: 30s``, starts the real controller
(``queue-autoscaler run``, 1 s tick) for that namespace, replays a spike through ``bench.load`` and samples
the Deployment and its lag with ``bench.watch`` until it is back at zero. Then it simulates the same trace
with the same annotations and a worker model of the same rate and partitions, twice: once with the worker
model's rebalance pause (``--rebalance-pause``) and the run's median pod start delay, and once replaying
what the run measured of its workers — each scale-up's start delay, and the windows in which the consumer
group consumed nothing (from the first revocation of a rebalance, or a first member's start, until every
partition was assigned again; the workers print their assignments) — so that what is compared is the
controller's decisions and the drain they give, not the run's join times. Both go to
``bench/results/validation.{json,md}`` (every run is appended to ``validation.runs.jsonl``).

Measured on the devstack: replica-seconds = ∫ spec.replicas dt; backlog age of each record = the time the
consumed count (records sent − lag) reached it − the time it was sent (records sent from the producer's
progress, every 50 ms). Everything it started is stopped and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import itertools
import json
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from bench import load, watch
from bench.sim import engine, ours, traces
from devstack.config import REPO_ROOT, layout

RESULTS = REPO_ROOT / "bench" / "results"
PREFIX = "queue-autoscaler.dev/"


def replica_seconds(points: Sequence[tuple[float, int]]) -> float:
    """∫ replicas dt over (time, replicas) samples, each count holding until the next sample."""
    return sum(n * (t1 - t0) for (t0, n), (t1, _) in itertools.pairwise(points))


def backlog_ages(
    sent: Sequence[tuple[float, int]], lag: Sequence[tuple[float, int]], *, chunk: int = 5
) -> list[tuple[float, int]]:
    """(age, records) from the records sent over time and the lag over time (same clock).

    The consumed count at a lag sample is sent − lag (never decreasing); the records it grew by since the
    previous sample left the backlog then; each was sent when the sent count first reached it."""
    sent_times = [t for t, _ in sent]
    sent_counts = [n for _, n in sent]

    def sent_at(record: int) -> float:
        i = bisect.bisect_left(sent_counts, record)
        if i >= len(sent_counts):
            return sent_times[-1]
        if i == 0 or sent_counts[i] == sent_counts[i - 1]:
            return sent_times[i]
        (t0, n0), (t1, n1) = sent[i - 1], sent[i]
        return t0 + (t1 - t0) * (record - n0) / (n1 - n0)

    def sent_by(t: float) -> float:
        i = bisect.bisect_right(sent_times, t)
        if i == 0:
            return 0.0
        if i == len(sent_times):
            return float(sent_counts[-1])
        (t0, n0), (t1, n1) = sent[i - 1], sent[i]
        return n0 + (n1 - n0) * (t - t0) / (t1 - t0)

    ages: list[tuple[float, int]] = []
    consumed = 0
    for t, backlog in lag:
        now_consumed = max(consumed, int(sent_by(t)) - backlog)
        record = consumed
        while record < now_consumed:
            n = min(chunk, now_consumed - record)
            ages.append((max(0.0, t - sent_at(record + (n + 1) // 2)), n))
            record += n
        consumed = now_consumed
    return ages


def quantile(ages: Sequence[tuple[float, int]], q: float) -> float:
    total = sum(n for _, n in ages)
    if not total:
        return 0.0
    seen = 0
    for age, n in sorted(ages):
        seen += n
        if seen >= q * total:
            return age
    return max(age for age, _ in ages)


def worker_events(pod_logs: Path, namespace: str) -> list[dict[str, Any]]:
    """The timed events the namespace's kafka_worker pods printed (their log files stay after the pods)."""
    found = []
    for path in sorted(pod_logs.glob(f"{namespace}_*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("t"), int | float) and "pod" in event:
                found.append(event)
    return sorted(found, key=lambda e: float(e["t"]))


def stopped_windows(
    events: Sequence[dict[str, Any]], *, partitions: int, origin: float
) -> list[tuple[float, float]]:
    """(from, to) seconds since ``origin`` (wall clock) in which the group consumed nothing: a rebalance
    stops every member from its first revocation (or, with no member holding partitions, from the start of
    the member that joins) until every partition is assigned again."""
    holding: dict[str, set[int]] = {}
    opened: float | None = None
    windows = []
    for event in events:
        kind, pod, t = event.get("event"), str(event["pod"]), float(event["t"]) - origin
        if kind == "starting" and opened is None and not any(holding.values()):
            opened = t
        elif kind == "partitions revoked":
            holding[pod] = set()
            if opened is None:
                opened = t
        elif kind == "stopped":
            holding.pop(pod, None)
        elif kind == "partitions assigned":
            holding[pod] = set(event.get("partitions") or ())
            covered = set().union(*holding.values())
            if opened is not None and len(covered) >= partitions:
                windows.append((round(opened, 3), round(t, 3)))
                opened = None
    return windows


def start_delays(samples: Sequence[watch.Sample]) -> list[float]:
    """For each scale-up, the seconds from spec.replicas reaching a count to ready replicas reaching it."""
    delays = []
    previous = 0
    for i, s in enumerate(samples):
        spec = s.spec_replicas or 0
        if spec > previous:
            for later in samples[i:]:
                if (later.ready_replicas or 0) >= spec:
                    delays.append(later.time_s - s.time_s)
                    break
        previous = spec
    return delays


def manifest(name: str, *, topic: str, group: str, rate: float, bootstrap: str, notes: dict[str, str]) -> Any:
    container = {
        "name": name,
        "image": "devstack/python",
        "command": [sys.executable, "-u", "-m", "devstack.workers.kafka_worker"],
        "args": ["--bootstrap", bootstrap, "--topic", topic, "--group", group, "--rate", str(rate)],
        "workingDir": str(REPO_ROOT),
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {PREFIX + k: v for k, v in notes.items()}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 5},
            },
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack = layout()
    suffix = secrets.token_hex(3)
    namespace, topic, group, name = f"sim-validate-{suffix}", f"sim-{suffix}", f"sim-{suffix}", "worker"
    notes = {
        "kafka-group": group,
        "kafka-topics": topic,
        "offset-reset-policy": "earliest",
        "drain-within": "30s",
        "scale-to-zero-after": "1m",
        "max-replicas": str(args.partitions),
    }
    profile = load.spike(0.0, args.peak, args.at, args.width)
    load_seconds = args.at + args.width
    api = await watch.connect(stack.kubeconfig)
    log_path = stack.run / f"{namespace}-controller.log"
    controller: asyncio.subprocess.Process | None = None
    try:
        await client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        await load.ensure_topic(stack.kafka_bootstrap, topic, args.partitions)
        body = manifest(
            name, topic=topic, group=group, rate=args.rate, bootstrap=stack.kafka_pod_bootstrap, notes=notes
        )
        await client.AppsV1Api(api).create_namespaced_deployment(namespace, body)
        with log_path.open("wb") as log:
            controller = await asyncio.create_subprocess_exec(
                *[
                    sys.executable,
                    "-m",
                    "autoscaler.cli",
                    "run",
                    "--kubeconfig",
                    str(stack.kubeconfig),
                    "--kafka-bootstrap",
                    stack.kafka_bootstrap,
                    "--namespace",
                    namespace,
                    "--interval",
                    "1",
                    "--metrics-port",
                    "0",
                    "--metrics-host",
                    "127.0.0.1",
                    "--report-port",
                    "0",
                    "--leader-election",
                    "false",
                    "--log-format",
                    "json",
                    "--report-insecure",  # no activator reports to this controller
                ],
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        await asyncio.sleep(3)  # the controller's first watch and tick; a warm-up, not a measurement
        origin = time.monotonic()
        wall_origin = time.time()
        sent: list[tuple[float, int]] = [(0.0, 0)]

        def on_progress(progress: load.Progress, *, final: bool = False) -> None:
            sent.append((time.monotonic() - origin, progress.sent))

        stop = asyncio.Event()
        samples: list[watch.Sample] = []
        lag_times: list[tuple[float, int]] = []
        spec_times: list[tuple[float, int]] = []

        def on_sample(s: watch.Sample) -> None:
            samples.append(s)
            at = time.monotonic() - origin
            spec_times.append((at, s.spec_replicas or 0))
            if s.lag is not None:
                lag_times.append((at, s.lag))
            if time.monotonic() - origin > load_seconds + 5 and s.spec_replicas == 0:
                stop.set()

        sampler = asyncio.create_task(
            watch.sample(
                namespace=namespace,
                deployment=name,
                csv_path=RESULTS / "validation.csv",
                duration=args.max_seconds,
                kubeconfig=stack.kubeconfig,
                bootstrap=stack.kafka_bootstrap,
                stop=stop,
                on_sample=on_sample,
            )
        )
        await load.run_profile(
            profile, topic=topic, duration=load_seconds, bootstrap=stack.kafka_bootstrap, report=on_progress
        )
        await sampler
    finally:
        if controller is not None:
            controller.terminate()
            await asyncio.wait_for(controller.wait(), timeout=20)
        await client.CoreV1Api(api).delete_namespace(namespace)
        await api.close()

    ages = backlog_ages(sent, lag_times)
    delays = start_delays(samples)
    start = statistics.median(delays) if delays else 3.0
    windows = stopped_windows(
        worker_events(stack.run / "pods", namespace), partitions=args.partitions, origin=wall_origin
    )
    trace = traces.from_profile(
        "validation-spike",
        profile,
        duration=spec_times[-1][0] if spec_times else load_seconds,
        seed=args.seed,
    )
    model = engine.WorkerModel(
        throughput=args.rate,
        drawn=False,
        start_min=start,
        start_extra=0.0,
        partitions=args.partitions,
        rebalance_pause=args.rebalance_pause,
    )
    replay = dataclasses.replace(model, start_delays=tuple(delays), stopped=tuple(windows))
    policy = "ours-drain-within"
    predicted = engine.simulate(trace, replay, ours.Ours(policy, notes), seed=args.seed)
    modelled = engine.simulate(trace, model, ours.Ours(policy, notes), seed=args.seed)
    real = {
        "replica_seconds": round(replica_seconds(spec_times), 1),
        "backlog_age_p50_s": round(quantile(ages, 0.5), 2),
        "backlog_age_p99_s": round(quantile(ages, 0.99), 2),
        "max_backlog": max((lag for _, lag in lag_times), default=0),
        "records": sent[-1][1],
    }
    sim = {**predicted.metrics(), "records": predicted.arrived}
    return {
        "trace": f"spike: 0/s, {args.peak:g}/s for {args.width:g} s at {args.at:g} s",
        "annotations": notes,
        "worker": {
            "rate": args.rate,
            "partitions": args.partitions,
            "measured_start_delay_s": round(start, 2),
            "measured_start_delays_s": [round(d, 2) for d in delays],
            "measured_stopped_windows_s": windows,
            "simulated_rebalance_pause_s": args.rebalance_pause,
        },
        "devstack": real,
        "simulator": sim,
        "ratio": {k: _ratio(real[k], sim[k]) for k in ("replica_seconds", "backlog_age_p99_s")},
        "simulator_modelled": {**modelled.metrics(), "records": modelled.arrived},
        "ratio_modelled": {
            k: _ratio(real[k], modelled.metrics()[k]) for k in ("replica_seconds", "backlog_age_p99_s")
        },
    }


def _ratio(real: object, predicted: object) -> float | None:
    if isinstance(real, int | float) and isinstance(predicted, int | float) and predicted:
        return round(real / predicted, 3)
    return None


def markdown(result: dict[str, Any], command: str) -> str:
    real = result["devstack"]

    def row(name: str, m: dict[str, Any]) -> str:
        return (
            f"| {name} | {m['replica_seconds']:,} | {m['backlog_age_p50_s']} s | "
            f"{m['backlog_age_p99_s']} s | {m['max_backlog']:,} |"
        )

    def ratios(name: str, ratio: dict[str, Any]) -> str:
        return f"| {name} | {ratio.get('replica_seconds', '—')} | | {ratio.get('backlog_age_p99_s', '—')} | |"

    modelled = result.get("simulator_modelled")
    return "\n".join(
        [
            "# The simulator against the devstack",
            "",
            f"Produced by `{command}`: {result['trace']}; annotations {result['annotations']}; worker "
            f"{result['worker']}.",
            "",
            "| | replica-seconds | backlog age p50 | p99 | max backlog |",
            "|---|---:|---:|---:|---:|",
            row("devstack (real controller, Kafka, workers)", real),
            row("simulator, replaying the run's start delays and rebalance windows", result["simulator"]),
            ratios("devstack ÷ simulator (replayed workers)", result["ratio"]),
            *(
                [
                    row("simulator, worker model only (median start delay, fixed pause)", modelled),
                    ratios("devstack ÷ simulator (worker model)", result["ratio_modelled"]),
                ]
                if modelled
                else []
            ),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sim.validate", description=__doc__)
    p.add_argument("--peak", type=float, default=120.0, help="records/s during the spike (default 120)")
    p.add_argument("--at", type=float, default=10.0, help="spike start, seconds (default 10)")
    p.add_argument("--width", type=float, default=60.0, help="spike length, seconds (default 60)")
    p.add_argument("--rate", type=float, default=20.0, help="records/s per worker (default 20)")
    p.add_argument("--partitions", type=int, default=8, help="topic partitions (default 8)")
    p.add_argument("--max-seconds", type=float, default=400.0, help="sampling bound (default 400)")
    p.add_argument(
        "--rebalance-pause",
        type=float,
        default=1.0,
        help="simulated seconds consumers stop on a membership change (default 1: the workers' heartbeat)",
    )
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    command = "python -m bench.sim.validate" + (" " + " ".join(argv) if argv else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "validation.json").write_text(json.dumps(result, indent=2) + "\n")
    with (RESULTS / "validation.runs.jsonl").open("a") as runs:  # every run, kept: run-to-run spread
        runs.write(json.dumps({"command": command, **result}) + "\n")
    (RESULTS / "validation.md").write_text(markdown(result, command))
    print(markdown(result, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
