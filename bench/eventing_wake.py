"""Wake from zero through the event broker: first event posted -> first delivery, and its parts.

On the devstack it creates its own namespace with an HTTP worker Deployment at 0 replicas
(devstack.workers.http_worker, ``--record`` on: one line per event it receives, with its own clock and the
time it started listening) scaled by the real controller on the ``trigger`` annotation
(``scale-to-zero-after`` 2s, ``scale-down-window`` 1s), the real activator, and the Broker's real
``broker-ingress`` and ``dispatcher`` (delivering to cluster Services through the activator); a Trigger
``wake`` takes ``com.shivamitcs.billing.started`` events to the worker's core Service.

``--rounds`` times, alternating, each from 0 replicas with no pod and no ready endpoint left:

- broker: ONE matching event POSTed to the Broker;
- activator alone: ONE CloudEvent POSTed through the activator to the same worker (its Host), so the
  broker's share of the wake is the difference;

and measures on this machine's clock, from the POST's send time: the 202 (broker rounds: stored in Kafka),
the controller's scale patch (its log ``control.target.scaled``, ActivatedFromZero), the worker listening
(its ``ready_at``), the first delivery at the worker (its record), and the added part (first delivery minus
listening: readiness probe, EndpointSlice, the activator forwarding).

    python -m bench.eventing_wake [--rounds 5]

Results: bench/results/eventing_wake.json and bench/results/eventing_wake.md (median, p90, max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as kube_client

from autoscaler.observability.log_events import ActivatorLog, ControlLog
from bench import activator as bench
from bench import watch
from bench.cold_start import at_zero, entries, timestamp
from devstack.config import layout as devstack_layout
from devstack.eventing_harness import BILLING, BROKER, GROUP, VERSION, Broker, broker_processes, install_crds
from devstack.harness import Devstack, eventually
from devstack.kube_rest import Rest

TRIGGER = "wake"
ANNOTATIONS = {"trigger": TRIGGER, "scale-to-zero-after": "2s", "scale-down-window": "1s"}
MODES = ("broker", "activator")
METRICS = {
    "accept_ms": "POST -> 202 (stored in Kafka, acks=all)",
    "patch_ms": "POST -> scale patch (ActivatedFromZero)",
    "listening_ms": "POST -> worker listening (ready_at)",
    "delivery_ms": "POST -> first delivery at the worker",
    "added_ms": "first delivery - worker listening",
}


def event_headers(event_id: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/bench/wake",
        "ce-type": BILLING,
        "Content-Type": "application/json",
    }


def read_record(path: Path) -> dict[str, dict[str, Any]]:
    """The worker's record by event id (the first delivery of each)."""
    found: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                found.setdefault(str(entry["id"]), entry)
    return found


def split(
    *, sent: float, answered: float | None, patched: float, ready_at: float, delivered: float
) -> dict[str, float]:
    """One round's parts, in ms from the send time; raises when the clock readings are out of order."""
    if not sent < patched < ready_at < delivered:
        raise ValueError(f"out of order: {sent=} {patched=} {ready_at=} {delivered=}")
    row = {
        "patch_ms": (patched - sent) * 1000,
        "listening_ms": (ready_at - sent) * 1000,
        "delivery_ms": (delivered - sent) * 1000,
        "added_ms": (delivered - ready_at) * 1000,
    }
    if answered is not None:
        row["accept_ms"] = (answered - sent) * 1000
    return {k: round(v, 1) for k, v in row.items()}


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Median, p90 and max of each part, per mode."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for mode in MODES:
        of_mode = [r for r in rows if r["mode"] == mode]
        summary[mode] = {}
        for key in METRICS:
            ordered = sorted(float(r[key]) for r in of_mode if key in r)
            if ordered:
                summary[mode][key] = {
                    "median": round(statistics.median(ordered), 1),
                    "p90": round(bench.quantile(ordered, 0.90), 1),
                    "max": ordered[-1],
                }
    return summary


class Wake:
    """The worker stack with the Broker beside it, and the worker's record."""

    def __init__(self, stack: bench.WorkerStack, broker: Broker, record: Path) -> None:
        self.stack, self.broker, self.record = stack, broker, record

    async def one_round(self, session: aiohttp.ClientSession, number: int, mode: str) -> dict[str, Any]:
        stack = self.stack
        activations = len(entries(stack, "controller", ControlLog.TARGET_SCALED, reason="ActivatedFromZero"))
        cold_starts = len(entries(stack, "activator", ActivatorLog.COLD_START_BEGAN))
        event_id = uuid.uuid4().hex
        answered: float | None = None
        sent = time.time()
        if mode == "broker":
            async with session.post(self.broker.url, headers=event_headers(event_id), data=b"{}") as response:
                await response.read()
                answered = time.time()
                status = response.status
            expected = 202
        else:
            headers = {**event_headers(event_id), "Host": stack.host}
            url = f"http://127.0.0.1:{stack.proxy_port}/wake"
            async with session.post(url, headers=headers, data=b"{}") as response:
                await response.read()
                status = response.status
            expected = 202
        if status != expected:
            raise SystemExit(f"round {number} ({mode}): status {status}, expected {expected}")
        delivered = await eventually(
            lambda: asyncio.sleep(0, read_record(self.record)),
            lambda found: event_id in found,
            timeout=120,
            interval=0.05,
            what=f"round {number}: the event at the worker",
        )
        found = await eventually(
            lambda: asyncio.sleep(
                0, entries(stack, "controller", ControlLog.TARGET_SCALED, reason="ActivatedFromZero")
            ),
            lambda e: len(e) > activations,
            timeout=10,
            what="the controller's ActivatedFromZero log",
        )
        if len(found) != activations + 1:
            raise SystemExit(f"round {number}: {len(found) - activations} activations for one event")
        if len(entries(stack, "activator", ActivatorLog.COLD_START_BEGAN)) != cold_starts + 1:
            raise SystemExit(f"round {number}: the event found a ready endpoint: not a wake from zero")
        entry = delivered[event_id]
        row: dict[str, Any] = {"round": number, "mode": mode, "pod": entry["pod"]}
        row |= split(
            sent=sent,
            answered=answered,
            patched=timestamp(found[-1]["timestamp"]),
            ready_at=float(entry["ready_at"]),
            delivered=float(entry["at"]),
        )
        bench.say(f"round {number}: {row}")
        return row


async def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    with bench.log_dir(args.logs, "eventing-wake") as logs:
        record = logs / "received.jsonl"
        devstack = Devstack(devstack_layout())
        # The CRDs first, so that the controller's Trigger watch starts with the resource served.
        api = await watch.connect(devstack.kubeconfig)
        try:
            await install_crds(devstack.layout.kustomize, Rest(api))
        finally:
            await api.close()
        async with bench.worker_stack(
            workdir=logs,
            replicas=0,
            annotations=ANNOTATIONS,
            worker_args=["--record", str(record), "--consume"],
        ) as stack:
            via = ("--activator-url", f"http://127.0.0.1:{stack.proxy_port}")
            async with broker_processes(
                devstack, stack.api, stack.namespace, logs, dispatcher_extra=via
            ) as broker:
                await kube_client.CustomObjectsApi(stack.api).create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    stack.namespace,
                    "triggers",
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "Trigger",
                        "metadata": {"name": TRIGGER},
                        "spec": {
                            "broker": BROKER,
                            "filter": {"attributes": {"type": BILLING}},
                            "subscriber": {
                                "ref": {"apiVersion": "v1", "kind": "Service", "name": bench.WORKER}
                            },
                        },
                    },
                )
                await broker.ready_trigger(TRIGGER)
                wake = Wake(stack, broker, record)
                rows = []
                timeout = aiohttp.ClientTimeout(total=120)
                async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
                    for number in range(1, 2 * args.rounds + 1):
                        await at_zero(stack)
                        rows.append(await wake.one_round(session, number, MODES[(number - 1) % 2]))
                await at_zero(stack)
    return rows


def markdown(result: Mapping[str, Any]) -> str:
    summary = result["summary"]
    lines = [
        *bench.header(
            "Wake from zero through the event broker: first event posted -> first delivery", result
        ),
        f"- {result['settings']['rounds']} rounds per path, alternating, each from 0 replicas with no pod "
        "left; ONE event per round; worker devstack.workers.http_worker (a Python process) with a 1 s "
        "readiness probe; controller tick 1 s; annotations "
        + ", ".join(f"`{k}: {v}`" for k, v in ANNOTATIONS.items()),
        "- broker: POST to the Broker -> ingress -> Kafka -> dispatcher -> activator (holds it) -> worker; "
        "activator alone: the same CloudEvent POSTed through the activator",
        "- all times on this machine's clock, from the POST's send time",
        "",
        "| measure | broker median ms | p90 | max | activator alone median ms | p90 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in METRICS.items():
        cells = []
        for mode in MODES:
            row = summary[mode].get(key)
            cells += ["-", "-", "-"] if row is None else [f"{row[s]:.0f}" for s in ("median", "p90", "max")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    share = result["broker_share_ms"]
    lines += [
        "",
        "The broker's share of the wake (median first delivery, broker minus activator alone): "
        f"{share:.0f} ms.",
        "",
        "| round | path | accept ms | patch ms | listening ms | first delivery ms | added ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rounds"]:
        accept = "-" if "accept_ms" not in row else f"{row['accept_ms']:.0f}"
        lines.append(
            f"| {row['round']} | {row['mode']} | {accept} | {row['patch_ms']:.0f} | "
            f"{row['listening_ms']:.0f} | {row['delivery_ms']:.0f} | {row['added_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def result_of(rows: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    summary = summarize(rows)
    share = summary["broker"]["delivery_ms"]["median"] - summary["activator"]["delivery_ms"]["median"]
    return {
        "benchmark": "wake from zero through the event broker",
        "command": bench.command_line("bench.eventing_wake"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": bench.machine(),
        "versions": bench.versions(),
        "settings": {"rounds": rounds, "annotations": ANNOTATIONS, "controller_interval_s": 1.0},
        "summary": summary,
        "broker_share_ms": round(share, 1),
        "rounds": rows,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.eventing_wake",
        description="Wake from zero on the devstack: one event posted to the Broker -> first delivery at "
        "the worker, split into accept, scale patch, worker listening and delivery; the same wake through "
        "the activator alone for comparison.",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per path (default 5)")
    parser.add_argument(
        "--out", type=Path, default=bench.RESULTS, help="results directory (default bench/results)"
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the processes' logs under this directory"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 3:
        raise SystemExit("--rounds must be >= 3")
    result = result_of(asyncio.run(measure(args)), args.rounds)
    text = markdown(result)
    bench.write_results("eventing_wake", result, text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
