"""The demo's live view, summary and results (bench/results/demo.{md,json}); see bench/demo.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import demo_eventing, watch
from devstack.config import Layout

NAMESPACE = "billing"
KAFKA_WORKER = "billing-worker"
HTTP_WORKER = "billing-worker-service"
TOPIC = "billing"


def view(
    started: float,
    rows: list[tuple[str, int, int, int | None]],
    events: list[watch.ScaleEvent],
    broker_line: str,
    tty: bool,
) -> str:
    lines = [f"queue-autoscaler demo  t={time.time() - started:5.1f}s   (Ctrl-C stops and cleans up)", ""]
    lines.append(f"  {'deployment':<24} {'replicas':>9} {'ready':>6} {'backlog':>8}")
    for name, spec, ready, lag in rows:
        lines.append(f"  {name:<24} {spec:>9} {ready:>6} {'-' if lag is None else lag:>8}")
    lines.append("")
    lines.append(broker_line)
    lines.append("")
    lines.append("  latest Events:")
    for event in events[-6:]:
        lines.append(f"    {event.time:%H:%M:%S.%f}"[:-3] + f"  {event.reason:<18} {event.note[:70]}")
    text = "\n".join(lines)
    return ("\x1b[H\x1b[2J" + text) if tty else text


@dataclass
class Summary:
    reaction_ms: float | None
    peak_lag: int
    replica_seconds: float
    back_to_zero_s: float | None
    events: list[watch.ScaleEvent]
    reaction_from: str = "lag first seen by the watcher (every 250 ms)"

    @property
    def woken_by(self) -> str:
        """The note of the Event that woke the Deployment from zero: which source and backlog."""
        activated = next((e for e in self.events if e.reason == "ActivatedFromZero"), None)
        return "-" if activated is None else activated.note


def summarize(
    samples: Sequence[watch.Sample], events: Sequence[watch.ScaleEvent], *, work_began: float | None = None
) -> Summary:
    """``work_began``: when the first work was sent (the reaction counts from it); None: from the first
    sample that saw a backlog."""
    activated = next((e for e in events if e.reason == "ActivatedFromZero"), None)
    first_lag = next((s for s in samples if (s.lag or 0) > 0), None)
    began = first_lag.wall_time.timestamp() if work_began is None and first_lag else work_began
    reaction = (activated.time.timestamp() - began) * 1000 if activated and began is not None else None
    peak = max((s.lag or 0 for s in samples), default=0)
    replica_seconds = sum(
        (b.time_s - a.time_s) * (a.spec_replicas or 0) for a, b in itertools.pairwise(samples)
    )
    drained = [s for s in samples if (s.lag or 0) > 0]
    to_zero = next((e for e in reversed(events) if e.reason == "ScaledToZero"), None)
    back = (to_zero.time - drained[-1].wall_time).total_seconds() if drained and to_zero else None
    summary = Summary(reaction, peak, replica_seconds, back, list(events))
    if work_began is not None:
        summary.reaction_from = "first event posted"
    return summary


def summary_rows(summary: Summary, title: str, what: str) -> list[str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    return [
        f"| {title} | |",
        "|---|---:|",
        f"| reaction: {summary.reaction_from} → ActivatedFromZero | {ms(summary.reaction_ms)} |",
        f"| woken by | {summary.woken_by} |",
        f"| peak {what} | {summary.peak_lag} |",
        f"| replica-seconds (spec replicas × time) | {summary.replica_seconds:.1f} |",
        f"| time back to zero after the {what} drained | "
        f"{'-' if summary.back_to_zero_s is None else f'{summary.back_to_zero_s:.1f} s'} |",
    ]


def summary_json(summary: Summary) -> dict[str, Any]:
    return {
        "reaction_ms": None if summary.reaction_ms is None else round(summary.reaction_ms),
        "peak_backlog": summary.peak_lag,
        "replica_seconds": round(summary.replica_seconds, 1),
        "back_to_zero_s": None if summary.back_to_zero_s is None else round(summary.back_to_zero_s, 1),
        "reaction_from": summary.reaction_from,
        "woken_by": summary.woken_by,
        "events": [{"time": e.time.isoformat(), "reason": e.reason, "note": e.note} for e in summary.events],
    }


@dataclass(frozen=True)
class Run:
    """How the demo ran: its arguments, its length and whether both workers got back to zero."""

    args: Mapping[str, Any]
    seconds: float
    back_at_zero: bool
    records: int | None  # records the Kafka spike produced


def write(
    results: Path, run: Run, *, kafka: Summary, flow: demo_eventing.FlowSummary, subscriber: Summary
) -> str:
    """Writes demo.md and demo.json into ``results``; returns the summary's tables (Markdown)."""
    text = "\n".join(
        [
            *summary_rows(kafka, f"{KAFKA_WORKER} (Kafka lag)", "lag"),
            "",
            *demo_eventing.flow_rows(flow),
            "",
            *summary_rows(subscriber, f"{HTTP_WORKER} scaling on the Trigger's backlog", "backlog"),
            "",
            f"Demo run time: {run.seconds:.0f} s. Plots: `bench/results/demo.png`, "
            "`bench/results/demo-eventing.png`.",
        ]
    )
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    args = run.args
    document = {
        "command": "make demo",
        "when": when,
        "cpus": os.cpu_count(),
        "run_seconds": round(run.seconds),
        "back_at_zero": run.back_at_zero,
        "arguments": dict(args),
        "kafka": {"records": run.records, **summary_json(kafka)},
        "broker": demo_eventing.flow_json(flow),
        "subscriber": summary_json(subscriber),
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / "demo.json").write_text(json.dumps(document, indent=2) + "\n")
    events = sorted(
        [(KAFKA_WORKER, e) for e in kafka.events] + [(HTTP_WORKER, e) for e in subscriber.events],
        key=lambda pair: pair[1].time,
    )
    (results / "demo.md").write_text(
        "# Demo: a spike of billing work, from zero and back\n\n"
        f"Command: `make demo` ({when}, {os.cpu_count()} CPUs). "
        f"Spike: {args['peak']:g} records/s for {args['spike_width']:g} s into topic `{TOPIC}` "
        f"({'?' if run.records is None else run.records} records); {args['events']} CloudEvents of "
        f"{len(demo_eventing.EVENT_TYPES)} types posted to the Broker over {args['event_seconds']:g} s; "
        "examples' timing shortened to scale-down-window 15s, scale-to-zero-after 30s. "
        "End-to-end latency: the worker's receive time minus the event's `time` attribute, which "
        "the demo sets just before each POST (one machine clock).\n\n"
        f"{text}\n\n![lag and replicas](demo.png)\n\n"
        "![Trigger backlog and replicas](demo-eventing.png)\n\n"
        "Events (from the controller):\n\n"
        + "\n".join(f"- {e.time:%H:%M:%S.%f}"[:-3] + f" {name} {e.reason}: {e.note}" for name, e in events)
        + "\n"
    )
    return text


def sampler(stack: Layout, name: str, csv_path: Path, seconds: float, stop: asyncio.Event) -> Any:
    group, topic = (KAFKA_WORKER, TOPIC) if name == KAFKA_WORKER else demo_eventing.group_and_topic(NAMESPACE)
    return watch.sample(
        namespace=NAMESPACE,
        deployment=name,
        csv_path=csv_path,
        duration=seconds,
        kubeconfig=stack.kubeconfig,
        bootstrap=stack.kafka_bootstrap,
        group=group,
        topics=[topic],
        stop=stop,
    )
