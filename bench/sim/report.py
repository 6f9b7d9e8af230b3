"""Simulation runs -> ``simulation.json`` (the issue's shape), a Markdown table, one PNG per trace."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.sim.engine import Run
from bench.sim.traces import Trace

COLOURS = {
    "ours-default": "tab:blue",
    "ours-drain-within": "tab:green",
    "keda-default": "tab:red",
    "keda-tuned": "tab:orange",
    "knative-kpa": "tab:purple",
}


def document(runs: Mapping[str, Sequence[Run]]) -> dict[str, Any]:
    """``{"traces": [{"name", "policies": {"<policy>": {replica_seconds, backlog_age_p50_s, ...}}}]}``."""
    return {
        "traces": [
            {"name": name, "policies": {run.policy: run.metrics() for run in trace_runs}}
            for name, trace_runs in runs.items()
        ]
    }


def details(runs: Mapping[str, Sequence[Run]], traces: Mapping[str, Trace]) -> dict[str, Any]:
    """What the table needs beyond the issue's fields: the trace and the direction reversals per burst."""
    return {
        name: {
            "description": traces[name].description,
            "kind": traces[name].kind,
            "duration_s": traces[name].duration,
            "records": traces[name].total,
            "bursts": len(traces[name].bursts),
            "policies": {
                run.policy: {
                    "max_reversals_per_burst": max(run.reversals_per_burst, default=0),
                    "processed": run.processed,
                    "left_in_backlog": run.left,
                }
                for run in trace_runs
            },
        }
        for name, trace_runs in runs.items()
    }


def markdown(
    runs: Mapping[str, Sequence[Run]],
    traces: Mapping[str, Trace],
    *,
    command: str,
    model: str = "",
    versus: str = "keda-default",
) -> str:
    lines = [
        "# Scaling simulation",
        "",
        f"Produced by `{command}` (deterministic: same seed, same figures). {model}",
        "",
        "Replica-seconds: pods existing (starting or ready) over time. Backlog age: seconds from a record's "
        "arrival until it leaves the backlog (Kafka: processed; HTTP: dispatched to a replica), over every "
        "record. Scale changes: patches of the replica count. Reversals per burst: direction changes from "
        "the burst's first scale-up to the next burst's start (1 = up then down, no flapping). Time to "
        "zero: from the trace's last arrival.",
        "",
    ]
    for name, trace_runs in runs.items():
        trace = traces[name]
        base = next((r for r in trace_runs if r.policy == versus), None)
        lines += [
            f"## {name} ({trace.kind}: {trace.description}; {trace.total:,} arrivals in "
            f"{trace.duration:g} s, {len(trace.bursts)} bursts)",
            "",
            f"| policy | replica-seconds | vs {versus} | backlog age p50 | p99 | max backlog | scale changes "
            "| max reversals per burst | time to zero |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run in trace_runs:
            ratio = (
                ""
                if base is None or not base.replica_seconds
                else f"{run.replica_seconds / base.replica_seconds:.2f}×"
            )
            zero = "never" if run.time_to_zero_s is None else f"{run.time_to_zero_s:.0f} s"
            lines.append(
                f"| {run.policy} | {run.replica_seconds:,.0f} | {ratio} | {run.backlog_age_p50_s:.1f} s "
                f"| {run.backlog_age_p99_s:.1f} s | {run.max_backlog:,} | {run.scale_changes} "
                f"| {max(run.reversals_per_burst, default=0)} | {zero} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(trace: Trace, trace_runs: Sequence[Run], png_path: Path) -> Path:
    """Replicas (top) and backlog (bottom) of every policy on one time axis."""
    figure = Figure(figsize=(11, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    replicas_axis, backlog_axis = figure.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    for run in trace_runs:
        colour = COLOURS.get(run.policy, "tab:gray")
        times = [s.t for s in run.samples]
        replicas_axis.step(
            times, [s.spec for s in run.samples], where="post", color=colour, label=run.policy, linewidth=1.2
        )
        backlog_axis.plot(times, [s.backlog for s in run.samples], color=colour, linewidth=1.0)
    for start, end in trace.bursts:
        for axis in (replicas_axis, backlog_axis):
            axis.axvspan(start, end, color="tab:gray", alpha=0.08, linewidth=0)
    replicas_axis.set_ylabel("replicas")
    replicas_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    replicas_axis.set_ylim(bottom=0)
    replicas_axis.grid(alpha=0.3)
    backlog_axis.set_ylabel("backlog (records)" if trace.kind == "kafka" else "queued requests")
    backlog_axis.set_xlabel("seconds (grey: load bursts)")
    backlog_axis.set_ylim(bottom=0)
    backlog_axis.set_xlim(0, trace.duration)
    backlog_axis.grid(alpha=0.3)
    replicas_axis.set_title(f"{trace.name}: {trace.description}")
    figure.legend(loc="outside lower center", ncols=len(trace_runs), fontsize=8)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    return png_path


def write(
    out: Path,
    runs: Mapping[str, Sequence[Run]],
    traces: Mapping[str, Trace],
    *,
    command: str,
    model: str = "",
    png: bool = True,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "simulation.json", out / "simulation.details.json", out / "simulation.md"]
    written[0].write_text(json.dumps(document(runs), indent=2) + "\n")
    written[1].write_text(json.dumps(details(runs, traces), indent=2) + "\n")
    written[2].write_text(markdown(runs, traces, command=command, model=model))
    if png:
        for name, trace_runs in runs.items():
            written.append(plot(traces[name], trace_runs, out / f"simulation-{name}.png"))
    return written
