"""Watch a scaled Deployment: replicas and consumer-group lag over time, to CSV, then a PNG.

    python -m bench.watch sample --namespace billing --deployment billing-worker --duration 120 \\
        --csv bench/results/billing.csv --png bench/results/billing.png
    python -m bench.watch render --csv bench/results/billing.csv --png billing.png

``sample`` reads, every ``--interval`` (250 ms), the Deployment's ``spec.replicas`` and ready replicas and its
consumer group's lag, and appends one CSV row per sample (``time_s,wall_time,spec_replicas,ready_replicas,
lag``; ``lag`` is empty when it could not be read). The lag is what the controller scales on: the consumer
group and topics come from the Deployment's ``queue-autoscaler.dev/`` annotations (``--group``/``--topic``
override them) and each partition counts by the annotations' rules (offset-reset-policy and so on). At the
end it fetches the controller's Events about the Deployment into ``<csv>.events.csv`` and renders the PNG.

``render`` draws a CSV (and its events file, when present) again: lag on the left axis, spec and ready
replicas on the right, each scale Event a vertical line labelled with its reason.

Defaults to the devstack: its kubeconfig (unless ``--kubeconfig`` or $KUBECONFIG) and its broker
($QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP, else 127.0.0.1:19092; or the Deployment's kafka-bootstrap annotation;
``--bootstrap`` wins).

Importable: ``await sample(namespace=..., deployment=..., csv_path=..., duration=...)`` returns the samples,
``await fetch_events(...)`` the Events, ``render(csv_path, png_path, events)`` writes the PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autoscaler import errors
from autoscaler.observability import logging as obs_logging
from autoscaler.policy import annotations as policy_annotations
from autoscaler.policy import lag as policy_lag
from autoscaler.sources.kafka.offsets import GroupQuery, OffsetReader, ReaderSettings

PREFIX = "queue-autoscaler.dev/"
REPORTING_CONTROLLER = "queue-autoscaler.dev/controller"
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
CSV_FIELDS = ("time_s", "wall_time", "spec_replicas", "ready_replicas", "lag")
EVENT_FIELDS = ("time", "reason", "note")
REASON_COLOURS = {
    "ActivatedFromZero": "tab:green",
    "ScaledUp": "tab:blue",
    "ScaledDown": "tab:orange",
    "ScaledToZero": "tab:red",
}


@dataclass(frozen=True)
class Sample:
    time_s: float  # since the first sample
    wall_time: datetime
    spec_replicas: int | None
    ready_replicas: int | None
    lag: int | None


@dataclass(frozen=True)
class ScaleEvent:
    time: datetime
    reason: str
    note: str = ""


# --- clients --------------------------------------------------------------------------------------------


def default_kubeconfig() -> Path:
    """$KUBECONFIG, else the devstack's kubeconfig."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env)
    from devstack.config import layout

    return layout().kubeconfig


def default_bootstrap() -> str:
    return os.environ.get("QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)


async def connect(kubeconfig: Path | str | None) -> client.ApiClient:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kubeconfig or default_kubeconfig()), client_configuration=configuration
    )
    return client.ApiClient(configuration)


# --- sampling -------------------------------------------------------------------------------------------


async def read_deployment(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The Deployment as raw JSON; None when it does not exist (or the API answers with an error)."""
    response = await client.AppsV1Api(api).read_namespaced_deployment(
        name, namespace, _preload_content=False, _request_timeout=5
    )
    body = await response.read()
    if response.status != 200:
        return None
    doc: dict[str, Any] = json.loads(body)
    return doc


def lag_query(
    notes: Mapping[str, str], *, group: str | None, topics: Sequence[str]
) -> tuple[GroupQuery, policy_annotations.ScalingPolicy] | None:
    """The group to read and the policy that says how its partitions count, from the Deployment's
    annotations with ``group``/``topics`` overriding them; None when no group is known."""
    scaling = {k: v for k, v in notes.items() if k.startswith(PREFIX)}
    if group:
        scaling[PREFIX + "kafka-group"] = group
    if topics:
        scaling[PREFIX + "kafka-topics"] = ",".join(topics)
    if PREFIX + "kafka-group" not in scaling:
        return None
    try:
        policy = policy_annotations.parse(scaling)
    except errors.PolicyError:
        # Invalid annotations: count the lag by the defaults for the group and topics alone.
        policy = policy_annotations.parse(
            {k: v for k, v in scaling.items() if k in (PREFIX + "kafka-group", PREFIX + "kafka-topics")}
        )
    if policy is None or policy.kafka_group is None:
        return None
    return GroupQuery(policy.kafka_group, policy.kafka_topics or None), policy


def format_row(s: Sample) -> dict[str, str]:
    def cell(value: int | None) -> str:
        return "" if value is None else str(value)

    return {
        "time_s": f"{s.time_s:.3f}",
        "wall_time": s.wall_time.isoformat().replace("+00:00", "Z"),
        "spec_replicas": cell(s.spec_replicas),
        "ready_replicas": cell(s.ready_replicas),
        "lag": cell(s.lag),
    }


class CsvLog:
    """The samples CSV, written and flushed row by row so that an interrupted run keeps what it saw."""

    def __init__(self, path: Path | str) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._file = target.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_FIELDS)
        self._writer.writeheader()

    def write(self, s: Sample) -> None:
        self._writer.writerow(format_row(s))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


async def sample(
    *,
    namespace: str,
    deployment: str,
    csv_path: Path | str,
    duration: float,
    interval: float = 0.25,
    kubeconfig: Path | str | None = None,
    bootstrap: str | None = None,
    group: str | None = None,
    topics: Sequence[str] = (),
    stop: asyncio.Event | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Samples the Deployment every ``interval`` seconds for ``duration`` seconds (or until ``stop`` is set)
    and writes each sample to ``csv_path`` as it is taken. A sample whose read failed keeps the failed
    value empty. Returns the samples."""
    if not 0 < interval <= duration:
        raise ValueError(f"need 0 < interval <= duration, got {interval} and {duration}")
    samples: list[Sample] = []
    api = await connect(kubeconfig)
    readers: dict[str, OffsetReader] = {}
    loop = asyncio.get_running_loop()
    sink = CsvLog(csv_path)
    try:
        started = loop.time()
        tick = 0
        while loop.time() - started < duration and not (stop is not None and stop.is_set()):
            wall = datetime.now(UTC)
            elapsed = loop.time() - started
            spec = ready = lag = None
            try:
                doc = await read_deployment(api, namespace, deployment)
            except (ApiException, OSError, TimeoutError):
                doc = None
            if doc is not None:
                spec = int(doc.get("spec", {}).get("replicas") or 0)
                ready = int(doc.get("status", {}).get("readyReplicas") or 0)
                notes: Mapping[str, str] = doc.get("metadata", {}).get("annotations") or {}
                found = lag_query(notes, group=group, topics=topics)
                if found is not None:
                    lag = await _read_lag(readers, found, notes, bootstrap)
            s = Sample(elapsed, wall, spec, ready, lag)
            samples.append(s)
            sink.write(s)
            if on_sample is not None:
                on_sample(s)
            tick += 1
            delay = max(0.0, started + tick * interval - loop.time())
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            else:
                await asyncio.sleep(delay)
    finally:
        sink.close()
        for reader in readers.values():
            await reader.close()
        await api.close()
    return samples


async def _read_lag(
    readers: dict[str, OffsetReader],
    found: tuple[GroupQuery, policy_annotations.ScalingPolicy],
    notes: Mapping[str, str],
    bootstrap: str | None,
) -> int | None:
    query, policy = found
    cluster = bootstrap or notes.get(PREFIX + "kafka-bootstrap") or default_bootstrap()
    reader = readers.get(cluster)
    if reader is None:
        reader = readers[cluster] = OffsetReader(cluster, settings=ReaderSettings(request_timeout=1.0))
    try:
        outcome = (await reader.read(queries=[query]))[query]
    except errors.KafkaError:
        return None
    if isinstance(outcome, errors.KafkaError):
        return None
    return policy_lag.compute(policy, outcome, {}).activation_lag


# --- events ---------------------------------------------------------------------------------------------


async def fetch_events(
    *,
    namespace: str,
    deployment: str,
    kubeconfig: Path | str | None = None,
    api: client.ApiClient | None = None,
    since: datetime | None = None,
) -> list[ScaleEvent]:
    """The controller's events.k8s.io Events about the Deployment (from ``since`` on), oldest first."""
    own = api is None
    api = api or await connect(kubeconfig)
    try:
        response = await client.EventsV1Api(api).list_namespaced_event(
            namespace, field_selector=f"regarding.name={deployment}", _preload_content=False
        )
        body = await response.read()
        if response.status != 200:
            raise ValueError(f"listing Events in {namespace}: HTTP {response.status}: {body[:200]!r}")
        items: list[dict[str, Any]] = json.loads(body)["items"]
    finally:
        if own:
            await api.close()
    events = []
    for item in items:
        if item.get("reportingController") != REPORTING_CONTROLLER:
            continue
        stamp = item.get("eventTime") or item["metadata"]["creationTimestamp"]
        event = ScaleEvent(_parse_time(stamp), str(item.get("reason") or ""), str(item.get("note") or ""))
        if since is None or event.time >= since:
            events.append(event)
    return sorted(events, key=lambda e: e.time)


def write_events(path: Path | str, events: Sequence[ScaleEvent]) -> None:
    with Path(path).open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=EVENT_FIELDS)
        writer.writeheader()
        for e in events:
            writer.writerow(
                {"time": e.time.isoformat().replace("+00:00", "Z"), "reason": e.reason, "note": e.note}
            )


def read_events(path: Path | str) -> list[ScaleEvent]:
    with Path(path).open(newline="") as source:
        return [
            ScaleEvent(_parse_time(r["time"]), r["reason"], r.get("note") or "")
            for r in csv.DictReader(source)
        ]


def events_path(csv_path: Path | str) -> Path:
    path = Path(csv_path)
    return path.with_name(path.stem + ".events.csv")


# --- rendering ------------------------------------------------------------------------------------------


def read_samples(csv_path: Path | str) -> list[Sample]:
    def number(text: str | None) -> int | None:
        return int(text) if text not in (None, "") else None

    with Path(csv_path).open(newline="") as source:
        return [
            Sample(
                float(row["time_s"]),
                _parse_time(row["wall_time"]),
                number(row["spec_replicas"]),
                number(row["ready_replicas"]),
                number(row["lag"]),
            )
            for row in csv.DictReader(source)
        ]


def render(
    csv_path: Path | str,
    png_path: Path | str,
    events: Sequence[ScaleEvent] = (),
    *,
    title: str | None = None,
) -> Path:
    """Draws lag (left axis) and spec/ready replicas (right axis) over time from a ``sample`` CSV, and each
    event inside the sampled time as a vertical line labelled with its reason. Returns the PNG's path."""
    samples = read_samples(csv_path)
    if not samples:
        raise ValueError(f"{csv_path}: no samples")
    start = samples[0].wall_time - timedelta(seconds=samples[0].time_s)
    times = [s.time_s for s in samples]

    def series(values: Sequence[int | None]) -> list[float]:
        return [math.nan if v is None else float(v) for v in values]

    figure = Figure(figsize=(11, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    lag_axis = figure.add_subplot()
    replica_axis = lag_axis.twinx()
    lag_line = lag_axis.plot(
        times, series([s.lag for s in samples]), color="tab:purple", label="lag (records)"
    )
    lag_axis.fill_between(times, series([s.lag for s in samples]), color="tab:purple", alpha=0.12)
    spec_line = replica_axis.step(
        times, series([s.spec_replicas for s in samples]), where="post", color="black", label="spec replicas"
    )
    ready_line = replica_axis.step(
        times,
        series([s.ready_replicas for s in samples]),
        where="post",
        color="tab:gray",
        linestyle="--",
        label="ready replicas",
    )
    lag_axis.set_xlabel("seconds")
    lag_axis.set_ylabel("consumer-group lag (records)", color="tab:purple")
    replica_axis.set_ylabel("replicas")
    lag_axis.set_ylim(bottom=0)
    top = max([s.spec_replicas or 0 for s in samples] + [s.ready_replicas or 0 for s in samples] + [1])
    replica_axis.set_ylim(0, top + 1)
    replica_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    lag_axis.set_xlim(times[0], max(times[-1], times[0] + 1))
    lag_axis.grid(alpha=0.3)

    handles = [*lag_line, *spec_line, *ready_line]
    seen: set[str] = set()
    for event in events:
        at = (event.time - start).total_seconds()
        if not times[0] <= at <= times[-1]:
            continue
        colour = REASON_COLOURS.get(event.reason, "tab:brown")
        line = lag_axis.axvline(
            at,
            color=colour,
            linestyle=":",
            linewidth=1.5,
            label=event.reason if event.reason not in seen else None,
        )
        if event.reason not in seen:
            handles.append(line)
            seen.add(event.reason)
        lag_axis.annotate(
            event.reason,
            xy=(at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -4),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize=7,
            color=colour,
        )
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7), fontsize=8)
    lag_axis.set_title(title or f"{Path(csv_path).stem}: lag and replicas")
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    return out


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --- command line ---------------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.watch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = commands.add_parser(
        "sample",
        help="sample a Deployment to CSV, then fetch its Events and render the PNG",
        description="Sample a Deployment's spec/ready replicas and its consumer group's lag to CSV, then "
        "fetch the controller's Events about it (<csv>.events.csv) and render the PNG.",
    )
    s.add_argument("--namespace", required=True, help="namespace of the Deployment")
    s.add_argument("--deployment", required=True, help="name of the Deployment")
    s.add_argument("--duration", type=_positive, default=120.0, help="seconds to sample (default 120)")
    s.add_argument("--interval", type=_positive, default=0.25, help="seconds between samples (default 0.25)")
    s.add_argument("--csv", type=Path, required=True, help="CSV file to write (overwritten)")
    s.add_argument("--png", type=Path, default=None, help="PNG to render at the end (default: <csv>.png)")
    s.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig file (default $KUBECONFIG, else the devstack's kubeconfig)",
    )
    s.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers for the lag (default: the Deployment's kafka-bootstrap annotation, "
        "else $QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP, else the devstack's 127.0.0.1:19092)",
    )
    s.add_argument(
        "--group", default=None, help="consumer group (default: the Deployment's kafka-group annotation)"
    )
    s.add_argument(
        "--topic",
        action="append",
        default=[],
        help="topic, repeatable (default: the kafka-topics annotation, else every topic the group "
        "committed to)",
    )
    s.add_argument("--title", default=None, help="title of the plot (default: from the CSV's name)")
    r = commands.add_parser(
        "render",
        help="render a CSV written by sample (and its events file) to a PNG",
        description="Render a CSV written by `sample` to a PNG; Events come from <csv>.events.csv when it "
        "exists, or from --events.",
    )
    r.add_argument("--csv", type=Path, required=True, help="CSV written by sample")
    r.add_argument("--png", type=Path, default=None, help="PNG to write (default: <csv>.png)")
    r.add_argument("--events", type=Path, default=None, help="events CSV (default <csv>.events.csv)")
    r.add_argument("--title", default=None, help="title of the plot (default: from the CSV's name)")
    return parser


async def _sample(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tty = sys.stderr.isatty()

    def show(s: Sample) -> None:
        line = (
            f"{s.time_s:7.2f}s  spec {_cell(s.spec_replicas):>3}  ready {_cell(s.ready_replicas):>3}  "
            f"lag {_cell(s.lag):>9}"
        )
        if tty:
            sys.stderr.write("\r" + line)
        elif round(s.time_s / args.interval) % max(1, round(5 / args.interval)) == 0:
            sys.stderr.write(line + "\n")  # every 5 s when not on a terminal

    began = datetime.now(UTC)
    samples = await sample(
        namespace=args.namespace,
        deployment=args.deployment,
        csv_path=args.csv,
        duration=args.duration,
        interval=args.interval,
        kubeconfig=args.kubeconfig,
        bootstrap=args.bootstrap,
        group=args.group,
        topics=args.topic,
        stop=stop,
        on_sample=show,
    )
    if tty:
        sys.stderr.write("\n")
    events = await fetch_events(
        namespace=args.namespace, deployment=args.deployment, kubeconfig=args.kubeconfig, since=began
    )
    write_events(events_path(args.csv), events)
    png = render(args.csv, args.png or args.csv.with_suffix(".png"), events, title=args.title)
    print(f"{len(samples)} samples in {args.csv}, {len(events)} events, plot {png}", file=sys.stderr)
    return 0


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sample":
            obs_logging.configure(log_format="console", level="warning")  # no offset-reader debug lines
            return asyncio.run(_sample(args))
        events_file = args.events or events_path(args.csv)
        events = read_events(events_file) if events_file.exists() else []
        png = render(args.csv, args.png or args.csv.with_suffix(".png"), events, title=args.title)
        print(f"plot {png}", file=sys.stderr)
        return 0
    except (ValueError, OSError, ApiException) as exc:
        print(f"bench.watch: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
