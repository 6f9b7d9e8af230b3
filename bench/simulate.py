"""Replay arrival traces against a worker model with our decision and with KEDA's and Knative's, side by side.

    python -m bench.simulate                      # every built-in trace, results in bench/results/
    python -m bench.simulate --trace spike --trace bursty --no-png
    python -m bench.simulate --csv my-trace.csv   # plus a recorded trace of timestamp,count lines

A discrete-time simulator (100 ms steps, ``bench/sim/engine.py``): arrivals per step from a seeded trace, a
worker model (per-replica throughput, fixed or drawn per record; pod start delay; partitions and the
one-consumer-per-partition cap), and one policy in the loop. ``ours-*`` call the real
``autoscaler.policy.decide`` at the controller's 1 s tick exactly as ``control/loop.py`` does
(``bench/sim/ours.py``); ``keda-default``, ``keda-tuned`` and ``knative-kpa`` are models of those systems,
each rule cited from its source (``bench/sim/keda.py``, ``hpa.py``, ``knative.py``).

Writes ``simulation.json`` (per trace and policy: replica_seconds, backlog_age_p50_s, backlog_age_p99_s,
max_backlog, scale_changes, time_to_zero_s), ``simulation.details.json`` (trace descriptions, direction
reversals per burst), ``simulation.md`` and ``simulation-<trace>.png`` (replicas and backlog of every
policy on one time axis). Same seed, same figures.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.sim import engine, keda, knative, ours, report, traces
from bench.sim.engine import Policy, Run, WorkerModel
from bench.sim.traces import Trace

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_CSV = Path(__file__).resolve().parent / "sim" / "minutes.csv"

MODEL = WorkerModel(
    throughput=20.0,
    drawn=True,
    start_min=3.0,
    start_extra=2.0,
    partitions=24,
    concurrency=10,
    service_time=0.5,
)

KAFKA_ANNOTATIONS = {"kafka-group": "workers"}
DRAIN_ANNOTATIONS = {"kafka-group": "workers", "drain-within": "30s"}
HTTP_ANNOTATIONS = {"http-service": "workers"}


def builtin_traces(seed: int) -> dict[str, Trace]:
    found = [
        traces.spike(base=0, peak=300, at=120, width=60, duration=900, seed=seed),
        traces.step(before=20, after=150, at=120, until=720, duration=1200, seed=seed),
        traces.diurnal(mean=100, amplitude=90, period=600, duration=1800, seed=seed),
        traces.bursty(rate=120, mean_on=60, mean_off=240, duration=2400, seed=seed),
        traces.from_csv("csv-minutes", SAMPLE_CSV.read_text()),
        traces.spike(base=0, peak=100, at=60, width=60, duration=600, seed=seed, kind="http"),
        traces.bursty(rate=60, mean_on=30, mean_off=120, duration=1800, seed=seed, kind="http"),
    ]
    return {trace.name: trace for trace in found}


def policies(trace: Trace) -> list[Callable[[], Policy]]:
    """The policies compared on a trace, as fresh instances (each run starts from nothing)."""
    if trace.kind == "kafka":
        return [
            lambda: ours.Ours("ours-default", KAFKA_ANNOTATIONS),
            lambda: ours.Ours("ours-drain-within", DRAIN_ANNOTATIONS),
            lambda: keda.Keda("keda-default", keda.DEFAULT),
            lambda: keda.Keda("keda-tuned", keda.TUNED),
        ]
    return [
        lambda: ours.Ours("ours-default", HTTP_ANNOTATIONS),
        lambda: keda.Keda("keda-default", keda.DEFAULT, http=True),
        lambda: keda.Keda("keda-tuned", keda.TUNED, http=True),
        lambda: knative.Kpa("knative-kpa", knative.KpaConfig(container_concurrency=MODEL.concurrency)),
    ]


def run_all(found: dict[str, Trace], *, model: WorkerModel, seed: int) -> dict[str, list[Run]]:
    return {
        name: [engine.simulate(trace, model, make(), seed=seed) for make in policies(trace)]
        for name, trace in found.items()
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trace", action="append", default=[], help="a built-in trace to run (default: all)")
    p.add_argument("--csv", type=Path, action="append", default=[], help="a timestamp,count trace file")
    p.add_argument(
        "--seed", type=int, default=7, help="seed of the arrivals and the worker model (default 7)"
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    p.add_argument("--no-png", action="store_true", help="skip the plots")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    found = builtin_traces(args.seed)
    unknown = [name for name in args.trace if name not in found]
    if unknown:
        print(f"unknown trace(s) {', '.join(unknown)}; built-in traces: {', '.join(found)}", file=sys.stderr)
        return 2
    if args.trace:
        found = {name: found[name] for name in args.trace}
    for path in args.csv:
        try:
            found[path.stem] = traces.from_csv(path.stem, path.read_text())
        except (OSError, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 2
    runs = run_all(found, model=MODEL, seed=args.seed)
    command = "python -m bench.simulate" + (" " + " ".join(argv) if argv else "")
    model = (
        f"Worker model: {MODEL.throughput:g} records/s per replica (exponential per-record times), pod start "
        f"{MODEL.start_min:g} s + exponential mean {MODEL.start_extra:g} s, {MODEL.partitions} partitions; "
        f"HTTP: {MODEL.concurrency} concurrent requests of {MODEL.service_time:g} s per replica. "
        "ours-default: `kafka-group` only (lag-per-replica 10, scale-down-window 1m, scale-to-zero-after "
        "5m); "
        "ours-drain-within: plus `drain-within: 30s`. keda-* on HTTP traces model the HTTP add-on's pending "
        "requests through the same HPA, with the target at concurrency-per-replica."
    )
    for path in report.write(args.out, runs, found, command=command, model=model, png=not args.no_png):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
