"""Scale-from-zero through the activator, repeated: how long the first request waits, and for what.

On the devstack it creates its own namespace with an HTTP worker Deployment at 0 replicas
(``scale-to-zero-after`` 2s, ``scale-down-window`` 1s), runs ``queue-autoscaler run`` and
``queue-autoscaler activator`` as processes, and ``--runs`` times: waits until the Deployment is back at 0
with no pod left, sends one GET through the activator, and measures on this machine's clock

- request -> scale patch: the controller's log ``control.target.scaled`` (ActivatedFromZero) - send time;
- request -> worker listening: the worker's own ``ready_at`` (when it started listening) minus the send time;
- request -> first response: the time the response arrived minus the send time;
- added cold start: first response minus ``ready_at``, the time the activator's path adds after the pod
  could answer (readiness probe period, pod status, EndpointSlice, watch, forward).

Then ``--bursts`` times, from zero again: ``--burst`` concurrent GETs, each keeping its pod busy 1 s
(``concurrency-per-replica`` 10, ``max-replicas`` 5), and which pod answered how many, and when each pod
started listening and gave its first answer: whether the queued burst spreads over the pods as they turn
ready or lands on the first one.

    python -m bench.cold_start [--runs 10] [--bursts 3] [--burst 50]

Results: median and p90 to bench/results/cold_start.json and bench/results/cold_start.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from autoscaler.observability.log_events import ActivatorLog, ControlLog
from bench import activator as bench
from devstack.harness import eventually

ANNOTATIONS = {
    "scale-to-zero-after": "2s",
    "scale-down-window": "1s",
    "concurrency-per-replica": "10",
    "max-replicas": "5",
}
BURST_DELAY = 1.0
METRICS = {
    "patch_ms": "request -> scale patch",
    "listening_ms": "request -> worker listening (ready_at)",
    "first_response_ms": "request -> first response",
    "added_ms": "added cold start (first response - ready_at)",
}


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def entries(stack: bench.WorkerStack, process: str, event: str, **fields: object) -> list[dict[str, Any]]:
    source = stack.controller if process == "controller" else stack.activator
    return [
        e
        for e in source.logs()
        if e.get("event") == event
        and e.get("namespace") == stack.namespace
        and all(e.get(k) == v for k, v in fields.items())
    ]


async def at_zero(stack: bench.WorkerStack) -> None:
    """Waits until the Deployment is at 0 with no pod (but terminating ones) and no ready endpoint."""

    async def state() -> tuple[int, list[str], list[str]]:
        stack.controller.assert_alive()
        stack.activator.assert_alive()
        return await stack.replicas(), await stack.pods(), await stack.endpoints()

    await eventually(state, lambda s: s == (0, [], []), timeout=120, interval=0.2, what="scale to zero")


async def one_run(stack: bench.WorkerStack, session: aiohttp.ClientSession, number: int) -> dict[str, Any]:
    activations = len(entries(stack, "controller", ControlLog.TARGET_SCALED, reason="ActivatedFromZero"))
    cold_starts = len(entries(stack, "activator", ActivatorLog.COLD_START_BEGAN))
    sent_at = time.time()
    async with session.get(
        f"http://127.0.0.1:{stack.proxy_port}/cold-start/{number}", headers={"Host": stack.host}
    ) as response:
        body = await response.read()
        answered_at = time.time()
        status = response.status
    if status != 200:
        raise SystemExit(f"run {number}: status {status}: {body[:300]!r}")
    answer = json.loads(body)

    async def scaled() -> list[dict[str, Any]]:
        return entries(stack, "controller", ControlLog.TARGET_SCALED, reason="ActivatedFromZero")

    found = await eventually(
        scaled, lambda e: len(e) > activations, timeout=10, what="the controller's ActivatedFromZero log"
    )
    if len(found) != activations + 1:
        raise SystemExit(f"run {number}: {len(found) - activations} activations for one request")
    now_cold = len(entries(stack, "activator", ActivatorLog.COLD_START_BEGAN))
    if now_cold != cold_starts + 1:
        raise SystemExit(f"run {number}: the request found a ready endpoint: not a cold start")
    patched_at = timestamp(found[-1]["timestamp"])
    ready_at = float(answer["ready_at"])
    if not sent_at < patched_at < ready_at < answered_at:
        raise SystemExit(
            f"run {number}: events out of order: {sent_at=} {patched_at=} {ready_at=} {answered_at=}"
        )
    row = {
        "run": number,
        "pod": answer["pod"],
        "patch_ms": round((patched_at - sent_at) * 1000, 1),
        "listening_ms": round((ready_at - sent_at) * 1000, 1),
        "first_response_ms": round((answered_at - sent_at) * 1000, 1),
        "added_ms": round((answered_at - ready_at) * 1000, 1),
    }
    bench.say(f"run {number}: {row}")
    return row


async def one_burst(
    stack: bench.WorkerStack, session: aiohttp.ClientSession, number: int, *, size: int
) -> dict[str, Any]:
    """``size`` concurrent GETs at zero: per pod, how many it answered, when it started listening and when
    it gave its first answer (ms after the burst was sent)."""

    async def send(index: int) -> tuple[float, dict[str, Any]]:
        async with session.get(
            f"http://127.0.0.1:{stack.proxy_port}/burst/{number}/{index}?delay={BURST_DELAY}",
            headers={"Host": stack.host},
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise SystemExit(f"burst {number}: request {index}: status {response.status}: {body[:300]!r}")
            return time.time(), json.loads(body)

    sent_at = time.time()
    answers = await asyncio.gather(*(send(index) for index in range(size)))
    pods: dict[str, dict[str, Any]] = {}
    for answered_at, body in sorted(answers, key=lambda a: a[0]):
        pod = pods.setdefault(
            body["pod"],
            {
                "answers": 0,
                "listening_ms": round((float(body["ready_at"]) - sent_at) * 1000),
                # The worker answers after BURST_DELAY: its first answer left the activator that much earlier.
                "first_forwarded_ms": round((answered_at - BURST_DELAY - sent_at) * 1000),
            },
        )
        pod["answers"] += 1
    ordered = sorted(pods.values(), key=lambda p: int(p["listening_ms"]))
    entry = {
        "burst": number,
        "answered": len(answers),
        "pods": ordered,
        "last_answer_ms": round((max(a[0] for a in answers) - sent_at) * 1000),
    }
    bench.say(f"burst {number}: {entry}")
    return entry


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    summary = {}
    for key in METRICS:
        ordered = sorted(float(r[key]) for r in rows)
        summary[key] = {
            "median": round(statistics.median(ordered), 1),
            "p90": round(bench.quantile(ordered, 0.90), 1),
            "min": ordered[0],
            "max": ordered[-1],
        }
    return summary


async def measure(args: argparse.Namespace, probe_period: int) -> dict[str, Any]:
    with bench.log_dir(args.logs, f"cold-start-{probe_period}s") as logs:
        async with bench.worker_stack(
            workdir=logs,
            replicas=0,
            annotations=ANNOTATIONS,
            probe_period=probe_period,
            activator_form=args.form,
        ) as stack:
            timeout = aiohttp.ClientTimeout(total=120)
            rows = []
            async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
                for number in range(1, args.runs + 1):
                    await at_zero(stack)
                    rows.append(await one_run(stack, session, number))
                bursts = []
                for number in range(1, args.bursts + 1):
                    await at_zero(stack)
                    bursts.append(await one_burst(stack, session, number, size=args.burst))
            await at_zero(stack)
    return {
        "readiness_probe_period_s": probe_period,
        "summary": summarize(rows),
        "runs": rows,
        "bursts": bursts,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    periods = [await measure(args, period) for period in args.probe_periods]
    return {
        "benchmark": "activator cold start",
        "command": bench.command_line("bench.cold_start"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": bench.machine(),
        "versions": bench.versions(),
        "settings": {
            "runs": args.runs,
            "annotations": ANNOTATIONS,
            "bursts": args.bursts,
            "burst_size": args.burst,
            "burst_request_delay_s": BURST_DELAY,
            "readiness_probe_periods_s": args.probe_periods,
            "controller_interval_s": 1.0,
            "activator_report_interval_s": 1.0,
            "activator_form": args.form,
        },
        "periods": periods,
    }


def markdown(result: Mapping[str, Any]) -> str:
    s = result["settings"]
    lines = [
        *bench.header("Activator cold start: scale from zero on the first request", result),
        f"- {s['runs']} runs per readiness-probe period; each from 0 replicas with no pod left; one GET "
        "through the activator, which probes the starting pod itself; worker devstack.workers.http_worker "
        f"(a Python process); controller tick {s['controller_interval_s']} s; the activator "
        f"{s.get('activator_form', 'source')} (`--form`)",
        "- all times on this machine's clock, from the request's send time",
    ]
    for period in result["periods"]:
        lines += [
            "",
            f"Worker readiness probe every {period['readiness_probe_period_s']} s:",
            "",
            "| measure | median ms | p90 ms | min ms | max ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, label in METRICS.items():
            row = period["summary"][key]
            lines.append(
                f"| {label} | {row['median']:.0f} | {row['p90']:.0f} | {row['min']:.0f} | {row['max']:.0f} |"
            )
        lines += [
            "",
            "| run | patch ms | listening ms | first response ms | added ms |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in period["runs"]:
            lines.append(
                f"| {row['run']} | {row['patch_ms']:.0f} | {row['listening_ms']:.0f} | "
                f"{row['first_response_ms']:.0f} | {row['added_ms']:.0f} |"
            )
        if period["bursts"]:
            lines += [
                "",
                f"Bursts of {s['burst_size']} concurrent requests at zero (each keeps its pod busy "
                f"{s['burst_request_delay_s']:g} s), per pod in the order they started listening: "
                "answers (listening at ms → first request forwarded at ms, from the burst's send time):",
                "",
                "| burst | pods | answers per pod (listening → first forwarded, ms) | last answer ms |",
                "|---:|---:|---|---:|",
            ]
            for burst in period["bursts"]:
                per_pod = ", ".join(
                    f"{p['answers']} ({p['listening_ms']} → {p['first_forwarded_ms']})" for p in burst["pods"]
                )
                lines.append(
                    f"| {burst['burst']} | {len(burst['pods'])} | {per_pod} | {burst['last_answer_ms']} |"
                )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cold_start",
        description="Repeated scale-from-zero of an HTTP worker through the activator on the devstack: "
        "request -> scale patch, -> worker listening, -> first response, and the added cold-start time.",
    )
    parser.add_argument("--runs", type=int, default=10, help="cold starts per probe period (default 10)")
    parser.add_argument("--bursts", type=int, default=3, help="bursts at zero per probe period (default 3)")
    parser.add_argument("--burst", type=int, default=50, help="concurrent requests per burst (default 50)")
    parser.add_argument(
        "--probe-periods",
        type=lambda text: [int(item) for item in text.split(",")],
        default=[1, 10],
        help="the worker's readiness probe periods to measure, in seconds (default 1,10)",
    )
    bench.add_form_argument(parser)
    parser.add_argument(
        "--out", type=Path, default=bench.RESULTS, help="results directory (default bench/results)"
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the controller and activator logs under this directory"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1 or args.burst < 1 or args.bursts < 0:
        raise SystemExit("--runs and --burst must be >= 1, --bursts >= 0")
    result = asyncio.run(run(args))
    text = markdown(result)
    bench.write_results("cold_start", result, text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
