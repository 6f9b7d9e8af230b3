"""The demo (``make demo``): the whole system on the devstack, from a spike of work back to zero.

It starts two controller replicas (leader election on a Lease) and one activator as local processes
against the devstack, applies ``manifests/examples`` (the billing flow) through the devstack overlay
``manifests/devstack`` (Kafka at the devstack's pod address; the images run as they are),
drives a spike of records into topic ``billing`` and a burst of CloudEvents through the activator, shows a
live view (replicas, lag, the latest Events), and when both workers are back at zero prints a summary —
reaction time, peak lag, replica-seconds, time back to zero — and writes it with a plot to bench/results/.
Ctrl-C stops everything it started and deletes the demo namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from autoscaler.observability import logging as obs_logging
from bench import load, watch
from devstack.config import REPO_ROOT, Layout, layout

NAMESPACE = "billing"
CONTROL_NAMESPACE = "queue-autoscaler"
KAFKA_WORKER = "billing-worker"
HTTP_WORKER = "billing-worker-service"
TOPIC = "billing"
EVENT_TYPE = "com.shivamitcs.billing.started"
PREFIX = "queue-autoscaler.dev/"
RESULTS = REPO_ROOT / "bench" / "results"
# Shorter than the examples' production-like values, so the whole demo fits in a few minutes.
DEMO_TIMING = {PREFIX + "scale-down-window": "15s", PREFIX + "scale-to-zero-after": "30s"}


@dataclass
class Processes:
    """The controller and activator processes of the demo, with their logs."""

    run_dir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.run_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.started.append((name, proc))
        return proc

    def port(self, name: str, endpoint: str, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        path = self.run_dir / f"{name}.log"
        while time.monotonic() < deadline:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    entry = json.loads(line)
                    if entry.get("event") == "listening" and entry.get("endpoint") == endpoint:
                        return int(entry["port"])
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not report its {endpoint} port; see {path}")

    def stop(self) -> None:
        for _, proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def queue_autoscaler(*args: str) -> list[str]:
    return [sys.executable, "-m", "autoscaler.cli", *args]


def for_the_demo(obj: dict[str, Any]) -> dict[str, Any]:
    """The examples as the devstack overlay renders them, with the demo's shorter timing, created at 0
    replicas so that the demo starts from zero (the examples leave the count to the controller)."""
    if obj.get("kind") != "Deployment":
        return obj
    obj["metadata"].setdefault("annotations", {}).update(DEMO_TIMING)
    obj["spec"]["replicas"] = 0
    return obj


def example_objects(stack: Layout) -> list[dict[str, Any]]:
    """``kustomize build manifests/devstack``: manifests/examples with Kafka at the devstack's pod address."""
    done = subprocess.run(
        [str(stack.kustomize), "build", str(REPO_ROOT / "manifests" / "devstack")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kustomize build manifests/devstack failed: {done.stderr.strip()}")
    return [
        for_the_demo(doc) for doc in yaml.safe_load_all(done.stdout) if doc and doc["kind"] != "Namespace"
    ]


async def fresh_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    with contextlib.suppress(ApiException):
        await core.delete_namespace(name)
    for _ in range(600):
        try:
            await core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                break
            raise
        await asyncio.sleep(0.1)
    await core.create_namespace({"metadata": {"name": name}})


async def ensure_namespace(api: client.ApiClient, name: str) -> None:
    with contextlib.suppress(ApiException):
        await client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})


async def apply(api: client.ApiClient, obj: dict[str, Any]) -> None:
    if obj["kind"] == "Deployment":
        await client.AppsV1Api(api).create_namespaced_deployment(NAMESPACE, obj)
    elif obj["kind"] == "Service":
        await client.CoreV1Api(api).create_namespaced_service(NAMESPACE, obj)


async def fresh_topic(bootstrap: str) -> None:
    """Topic ``billing`` with 6 partitions and no backlog (recreated when it exists)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if TOPIC in await admin.list_topics():
            await admin.delete_topics([TOPIC])
            for _ in range(100):
                if TOPIC not in await admin.list_topics():
                    break
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
    for _ in range(50):
        with contextlib.suppress(Exception):
            if await load.ensure_topic(bootstrap, TOPIC, 6):
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"could not create topic {TOPIC}")


async def replicas(api: client.ApiClient, name: str) -> tuple[int, int]:
    deployment = await client.AppsV1Api(api).read_namespaced_deployment(name, NAMESPACE)
    return int(deployment.spec.replicas or 0), int(deployment.status.ready_replicas or 0)


@dataclass
class HttpBurst:
    statuses: list[int] = field(default_factory=list)
    first_sent: float | None = None
    first_answered: float | None = None


async def send_cloudevents(proxy_port: int, count: int, result: HttpBurst) -> None:
    """``count`` binary-mode CloudEvents of the billing type, all at once, through the activator."""

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        headers = {
            "Host": f"{HTTP_WORKER}.{NAMESPACE}",
            "ce-specversion": "1.0",
            "ce-id": str(uuid.uuid4()),
            "ce-source": "/demo/billing",
            "ce-type": EVENT_TYPE,
            "Content-Type": "application/json",
        }
        sent = time.time()
        result.first_sent = sent if result.first_sent is None else min(result.first_sent, sent)
        async with session.post(
            f"http://127.0.0.1:{proxy_port}/invoices", data=json.dumps({"invoice": i}), headers=headers
        ) as response:
            await response.read()
            result.statuses.append(response.status)
            answered = time.time()
            if response.status == 200 and (result.first_answered is None or answered < result.first_answered):
                result.first_answered = answered

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, i) for i in range(count)))


def view(
    started: float, rows: list[tuple[str, int, int, int | None]], events: list[watch.ScaleEvent], tty: bool
) -> str:
    lines = [f"queue-autoscaler demo  t={time.time() - started:5.1f}s   (Ctrl-C stops and cleans up)", ""]
    lines.append(f"  {'deployment':<24} {'replicas':>9} {'ready':>6} {'lag':>7}")
    for name, spec, ready, lag in rows:
        lines.append(f"  {name:<24} {spec:>9} {ready:>6} {'-' if lag is None else lag:>7}")
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
    http_statuses: dict[int, int]
    http_first_response_ms: float | None
    events: list[watch.ScaleEvent]


def summarize(
    samples: Sequence[watch.Sample], events: Sequence[watch.ScaleEvent], burst: HttpBurst
) -> Summary:
    activated = next((e for e in events if e.reason == "ActivatedFromZero"), None)
    first_lag = next((s for s in samples if (s.lag or 0) > 0), None)
    reaction = (
        (activated.time - first_lag.wall_time).total_seconds() * 1000 if activated and first_lag else None
    )
    peak = max((s.lag or 0 for s in samples), default=0)
    replica_seconds = sum(
        (b.time_s - a.time_s) * (a.spec_replicas or 0) for a, b in itertools.pairwise(samples)
    )
    drained = [s for s in samples if (s.lag or 0) > 0]
    to_zero = next((e for e in reversed(events) if e.reason == "ScaledToZero"), None)
    back = (to_zero.time - drained[-1].wall_time).total_seconds() if drained and to_zero else None
    statuses: dict[int, int] = {}
    for status in burst.statuses:
        statuses[status] = statuses.get(status, 0) + 1
    first = (
        (burst.first_answered - burst.first_sent) * 1000
        if burst.first_answered is not None and burst.first_sent is not None
        else None
    )
    return Summary(reaction, peak, replica_seconds, back, statuses, first, list(events))


def summary_text(summary: Summary, png: Path, seconds: float) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    return "\n".join(
        [
            f"| {KAFKA_WORKER} (Kafka lag) | |",
            "|---|---:|",
            f"| reaction: lag first seen by the watcher (every 250 ms) → ActivatedFromZero | "
            f"{ms(summary.reaction_ms)} |",
            f"| peak lag | {summary.peak_lag} |",
            f"| replica-seconds (spec replicas × time) | {summary.replica_seconds:.1f} |",
            f"| time back to zero after the backlog drained | "
            f"{'-' if summary.back_to_zero_s is None else f'{summary.back_to_zero_s:.1f} s'} |",
            "",
            f"| {HTTP_WORKER} (CloudEvents via the activator) | |",
            "|---|---:|",
            f"| responses by status | {summary.http_statuses} |",
            f"| first request → first response, woken from zero | {ms(summary.http_first_response_ms)} |",
            "",
            f"Demo run time: {seconds:.0f} s. Plot: `{png}`.",
        ]
    )


async def run(args: argparse.Namespace) -> int:
    stack = layout()
    run_dir = stack.run / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    token = secrets.token_hex(16)
    env = {**os.environ, "QUEUE_AUTOSCALER_REPORT_TOKEN": token}
    api = await watch.connect(stack.kubeconfig)
    processes = Processes(run_dir)
    background: list[asyncio.Task[Any]] = []
    tty = sys.stdout.isatty()
    started = time.time()
    try:
        print("[demo] preparing: namespace billing, topic billing (6 partitions)", flush=True)
        await fresh_namespace(api, NAMESPACE)
        await ensure_namespace(api, CONTROL_NAMESPACE)
        await fresh_topic(stack.kafka_bootstrap)
        common = ["--kubeconfig", str(stack.kubeconfig), "--namespace", NAMESPACE, "--log-format", "json"]
        for replica in (1, 2):
            processes.start(
                f"controller-{replica}",
                queue_autoscaler(
                    "run",
                    *common,
                    "--kafka-bootstrap",
                    stack.kafka_bootstrap,
                    "--identity",
                    f"demo-controller-{replica}",
                    "--lease-namespace",
                    CONTROL_NAMESPACE,
                    "--metrics-host",
                    "127.0.0.1",
                    "--metrics-port",
                    "0",
                    "--report-port",
                    "0",
                ),
                env,
            )
        processes.start(
            "activator",
            queue_autoscaler(
                "activator",
                *common,
                "--lease-namespace",
                CONTROL_NAMESPACE,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--metrics-port",
                "0",
            ),
            env,
        )
        proxy_port = await asyncio.to_thread(processes.port, "activator", "proxy")
        print(f"[demo] 2 controllers and the activator (127.0.0.1:{proxy_port}) started; logs in {run_dir}")
        for obj in example_objects(stack):
            await apply(api, obj)
        print(
            "[demo] applied manifests/examples: billing-worker (Kafka), billing-worker-service (CloudEvents)"
        )
        await asyncio.sleep(3)  # a leader is elected and both targets are seen at 0

        csv_path = run_dir / "billing-worker.csv"
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(
            watch.sample(
                namespace=NAMESPACE,
                deployment=KAFKA_WORKER,
                csv_path=csv_path,
                duration=args.max_seconds,
                kubeconfig=stack.kubeconfig,
                bootstrap=stack.kafka_bootstrap,
                group=KAFKA_WORKER,
                topics=[TOPIC],
                stop=stop_sampling,
            )
        )
        profile = load.spike(base=0, peak=args.peak, at=args.spike_at, width=args.spike_width)
        producing = asyncio.create_task(
            load.run_profile(
                profile,
                topic=TOPIC,
                duration=args.spike_at + args.spike_width + 0.5,
                bootstrap=stack.kafka_bootstrap,
            )
        )
        burst = HttpBurst()
        http = asyncio.create_task(send_cloudevents(proxy_port, args.events, burst))
        background.extend([sampler, producing, http])
        deadline = time.time() + args.max_seconds
        last_plain = 0.0
        back_at_zero = False
        while time.time() < deadline:
            rows: list[tuple[str, int, int, int | None]] = []
            for name in (KAFKA_WORKER, HTTP_WORKER):
                spec, ready = await replicas(api, name)
                rows.append((name, spec, ready, None))
            samples = watch.read_samples(csv_path) if csv_path.exists() else []
            lag = samples[-1].lag if samples else None
            rows[0] = (rows[0][0], rows[0][1], rows[0][2], lag)
            events = sorted(
                [
                    *await watch.fetch_events(namespace=NAMESPACE, deployment=KAFKA_WORKER, api=api),
                    *await watch.fetch_events(namespace=NAMESPACE, deployment=HTTP_WORKER, api=api),
                ],
                key=lambda e: e.time,
            )
            if tty or time.time() - last_plain >= 5:
                print(view(started, rows, events, tty), flush=True)
                last_plain = time.time()
            produced = producing.done() and http.done()
            back_at_zero = produced and all(spec == 0 and ready == 0 for _, spec, ready, _ in rows)
            if back_at_zero:
                break
            await asyncio.sleep(1)
        stop_sampling.set()
        samples = await sampler
        result = producing.result() if producing.done() else None
        kafka_events = await watch.fetch_events(namespace=NAMESPACE, deployment=KAFKA_WORKER, api=api)
        summary = summarize(samples, kafka_events, burst)
        png = watch.render(
            csv_path, run_dir / "demo.png", kafka_events, title="billing-worker: lag and replicas"
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, RESULTS / "demo.png")
        seconds = time.time() - started
        text = summary_text(summary, RESULTS / "demo.png", seconds)
        (RESULTS / "demo.md").write_text(
            "# Demo: a spike of billing work, from zero and back\n\n"
            f"Command: `make demo` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs). "
            f"Spike: {args.peak:g} records/s for {args.spike_width:g} s into topic `{TOPIC}` "
            f"({result.delivered if result else '?'} records), "
            f"{args.events} CloudEvents through the activator; "
            "examples' timing shortened to scale-down-window 15s, scale-to-zero-after 30s.\n\n"
            f"{text}\n\n![lag and replicas](demo.png)\n\n"
            "Events (from the controller):\n\n"
            + "\n".join(f"- {e.time:%H:%M:%S.%f}"[:-3] + f" {e.reason}: {e.note}" for e in kafka_events)
            + "\n"
        )
        print("\n" + text)
        print(f"\n[demo] summary written to {RESULTS / 'demo.md'}")
        if not back_at_zero:
            print(f"[demo] not back at zero within {args.max_seconds:.0f}s", file=sys.stderr)
            return 1
        return 0
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        processes.stop()
        with contextlib.suppress(ApiException):
            await client.CoreV1Api(api).delete_namespace(NAMESPACE)
        await api.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--peak", type=float, default=300.0, help="records/s during the spike (default 300)")
    parser.add_argument("--spike-at", type=float, default=1.0, help="seconds before the spike (default 1)")
    parser.add_argument("--spike-width", type=float, default=10.0, help="seconds of spike (default 10)")
    parser.add_argument("--events", type=int, default=40, help="CloudEvents sent through the activator (40)")
    parser.add_argument(
        "--max-seconds", type=float, default=240.0, help="give up waiting for zero after this (default 240)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    obs_logging.configure(log_format="console", level="warning")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        print("\n[demo] interrupted: everything it started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
