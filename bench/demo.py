"""The demo (``make demo``): the whole system on the devstack, from a spike of work back to zero.

It installs the eventing CRDs and starts two controller replicas (leader election on a Lease), one
activator, the broker ingress and the dispatcher (delivering to cluster Services through the activator) as
local processes against the devstack, applies ``manifests/examples`` (the billing flow: a Kafka worker, and a
CloudEvents worker subscribed by the Trigger ``billing-process-trigger`` on the Broker
``default-event-broker``) through the devstack overlay ``manifests/devstack`` (Kafka at the devstack's pod
address; the images run as they are), drives a spike of records into topic ``billing`` and events of three
types into the Broker, shows a live view (replicas, lag and Trigger backlog, what the worker received, the
latest Events), and when both workers are back at zero prints a summary — reaction time, peak lag,
replica-seconds, time back to zero; events/s in, delivered, filtered out, dead-lettered, end-to-end latency
(bench/demo_eventing.py) — and writes it with two plots to bench/results/demo.{md,json,png} and
demo-eventing.png. Ctrl-C stops everything it started and deletes the demo namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from autoscaler.observability import logging as obs_logging
from autoscaler.observability.log_events import ControlLog, EventingLog
from bench import demo_eventing, demo_report, load, watch
from bench.demo_report import HTTP_WORKER, KAFKA_WORKER, NAMESPACE, TOPIC, summarize
from devstack.config import REPO_ROOT, Layout, layout
from devstack.eventing_harness import GROUP, VERSION, broker_processes, install_crds, logged_port
from devstack.harness import Devstack
from devstack.kube_rest import Rest

CONTROL_NAMESPACE = "queue-autoscaler"
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

    def entries(self, name: str) -> list[dict[str, Any]]:
        path = self.run_dir / f"{name}.log"
        found = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    found.append(json.loads(line))
        return found

    def port(self, name: str, endpoint: str, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.entries(name):
                if entry.get("event") == "listening" and entry.get("endpoint") == endpoint:
                    return int(entry["port"])
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not report its {endpoint} port; see {self.run_dir / (name + '.log')}")

    async def deciding(self, deployment: str, timeout: float = 60) -> None:
        """Waits until a controller (the leader) has decided for ``deployment`` with its lag read (a
        Broker's topic just created is seen at the controller's next recheck of missing topics)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, _proc in self.started:
                if any(
                    e.get("event") == ControlLog.DECISION_CHANGED
                    and e.get("deployment") == deployment
                    and e.get("kafka_error") is None
                    and e.get("partitions") is not None
                    for e in self.entries(name)
                ):
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(
            f"no controller decided for {deployment} within {timeout:.0f} s; see {self.run_dir}"
        )

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


def for_the_demo(obj: dict[str, Any], record: Path) -> dict[str, Any]:
    """The examples as the devstack overlay renders them, with the demo's shorter timing, created at 0
    replicas so that the demo starts from zero (the examples leave the count to the controller), run from
    this checkout, and the CloudEvents worker recording what it receives in ``record``."""
    if obj.get("kind") != "Deployment":
        return obj
    obj["metadata"].setdefault("annotations", {}).update(DEMO_TIMING)
    obj["spec"]["replicas"] = 0
    for container in obj["spec"]["template"]["spec"]["containers"]:
        container["workingDir"] = str(REPO_ROOT)
        if obj["metadata"]["name"] == HTTP_WORKER:
            container["args"] = [*container.get("args", []), "--record", str(record)]
    return obj


def example_objects(stack: Layout, record: Path) -> list[dict[str, Any]]:
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
        for_the_demo(doc, record)
        for doc in yaml.safe_load_all(done.stdout)
        if doc and doc["kind"] != "Namespace"
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
    elif obj["kind"] in ("Broker", "Trigger"):
        plural = obj["kind"].lower() + "s"
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, plural, obj
        )


async def fresh_topic(bootstrap: str) -> None:
    """Topic ``billing`` with 6 partitions and no backlog (recreated when it exists)."""
    await load.delete_topic(bootstrap, TOPIC)
    for _ in range(50):
        with contextlib.suppress(Exception):
            if await load.ensure_topic(bootstrap, TOPIC, 6):
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"could not create topic {TOPIC}")


async def replicas(api: client.ApiClient, name: str) -> tuple[int, int]:
    deployment = await client.AppsV1Api(api).read_namespaced_deployment(name, NAMESPACE)
    return int(deployment.spec.replicas or 0), int(deployment.status.ready_replicas or 0)


async def run(args: argparse.Namespace) -> int:
    stack = layout()
    run_dir = stack.run / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    record = run_dir / "billing-worker-service.jsonl"
    token = secrets.token_hex(16)
    env = {**os.environ, "QUEUE_AUTOSCALER_REPORT_TOKEN": token}
    api = await watch.connect(stack.kubeconfig)
    processes = Processes(run_dir)
    background: list[asyncio.Task[Any]] = []
    tty = sys.stdout.isatty()
    started = time.time()
    async with contextlib.AsyncExitStack() as exits:
        try:
            print(
                "[demo] preparing: namespace billing, topic billing (6 partitions), eventing CRDs", flush=True
            )
            await fresh_namespace(api, NAMESPACE)
            await ensure_namespace(api, CONTROL_NAMESPACE)
            await fresh_topic(stack.kafka_bootstrap)
            await demo_eventing.fresh_broker_topic(stack.kafka_bootstrap, NAMESPACE)
            await install_crds(stack.kustomize, Rest(api))
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
            print(
                f"[demo] 2 controllers and the activator (127.0.0.1:{proxy_port}) started; logs in {run_dir}"
            )
            for obj in example_objects(stack, record):
                await apply(api, obj)
            print(
                "[demo] applied manifests/examples: billing-worker (Kafka), billing-worker-service "
                f"(Trigger {demo_eventing.TRIGGER} on Broker {demo_eventing.BROKER})"
            )
            broker = await exits.enter_async_context(
                broker_processes(
                    Devstack(stack),
                    api,
                    NAMESPACE,
                    run_dir,
                    dispatcher_extra=("--activator-url", f"http://127.0.0.1:{proxy_port}"),
                    create_broker=False,
                )
            )
            await broker.ready_trigger(demo_eventing.TRIGGER)
            for name in (KAFKA_WORKER, HTTP_WORKER):
                await processes.deciding(name)  # a leader is elected and reads both backlogs at 0
            print(f"[demo] broker ingress and dispatcher started; Trigger Ready; posting to {broker.url}")

            stop_sampling = asyncio.Event()
            csv_paths = {name: run_dir / f"{name}.csv" for name in (KAFKA_WORKER, HTTP_WORKER)}
            samplers = {
                name: asyncio.create_task(
                    demo_report.sampler(stack, name, path, args.max_seconds, stop_sampling)
                )
                for name, path in csv_paths.items()
            }
            profile = load.spike(base=0, peak=args.peak, at=args.spike_at, width=args.spike_width)
            producing = asyncio.create_task(
                load.run_profile(
                    profile,
                    topic=TOPIC,
                    duration=args.spike_at + args.spike_width + 0.5,
                    bootstrap=stack.kafka_bootstrap,
                )
            )
            posting = demo_eventing.Posting()
            posts = asyncio.create_task(
                demo_eventing.post_events(
                    broker.url, count=args.events, seconds=args.event_seconds, posting=posting
                )
            )
            background.extend([*samplers.values(), producing, posts])
            deadline = time.time() + args.max_seconds
            last_plain = 0.0
            back_at_zero = False
            while time.time() < deadline:
                rows: list[tuple[str, int, int, int | None]] = []
                for name, path in csv_paths.items():
                    spec, ready = await replicas(api, name)
                    samples = watch.read_samples(path) if path.exists() else []
                    rows.append((name, spec, ready, samples[-1].lag if samples else None))
                events = sorted(
                    [
                        *await watch.fetch_events(namespace=NAMESPACE, deployment=KAFKA_WORKER, api=api),
                        *await watch.fetch_events(namespace=NAMESPACE, deployment=HTTP_WORKER, api=api),
                    ],
                    key=lambda e: e.time,
                )
                if tty or time.time() - last_plain >= 5:
                    line = demo_eventing.live_line(posting, demo_eventing.read_record(record))
                    print(demo_report.view(started, rows, events, line, tty), flush=True)
                    last_plain = time.time()
                produced = producing.done() and posts.done()
                back_at_zero = produced and all(spec == 0 and ready == 0 for _, spec, ready, _ in rows)
                if back_at_zero:
                    break
                await asyncio.sleep(1)
            stop_sampling.set()
            samples_of = {name: await task for name, task in samplers.items()}
            result = producing.result() if producing.done() else None
            if posts.done():
                posts.result()  # a failed POST raises here
            metrics_port = logged_port(broker.dispatcher, EventingLog.DISPATCHER_STARTED, "metrics_port")
            results = demo_eventing.dispatcher_results(
                await demo_eventing.scrape(metrics_port or 0), namespace=NAMESPACE
            )
            flow = demo_eventing.summarize_flow(posting, demo_eventing.read_record(record), results)
            kafka_events = await watch.fetch_events(namespace=NAMESPACE, deployment=KAFKA_WORKER, api=api)
            http_events = await watch.fetch_events(namespace=NAMESPACE, deployment=HTTP_WORKER, api=api)
            RESULTS.mkdir(parents=True, exist_ok=True)
            for name, png, events_of, title in (
                (KAFKA_WORKER, "demo.png", kafka_events, "billing-worker: lag and replicas"),
                (
                    HTTP_WORKER,
                    "demo-eventing.png",
                    http_events,
                    f"billing-worker-service: Trigger {demo_eventing.TRIGGER} backlog and replicas",
                ),
            ):
                drawn = watch.render(csv_paths[name], run_dir / png, events_of, title=title)
                shutil.copyfile(drawn, RESULTS / png)
            seconds = time.time() - started
            text = demo_report.write(
                RESULTS,
                demo_report.Run(
                    args=vars(args),
                    seconds=seconds,
                    back_at_zero=back_at_zero,
                    records=result.delivered if result else None,
                ),
                kafka=summarize(samples_of[KAFKA_WORKER], kafka_events),
                flow=flow,
                subscriber=summarize(samples_of[HTTP_WORKER], http_events, work_began=posting.began),
            )
            print("\n" + text)
            print(f"\n[demo] summary written to {RESULTS / 'demo.md'} and demo.json")
            if not back_at_zero:
                print(f"[demo] not back at zero within {args.max_seconds:.0f}s", file=sys.stderr)
                return 1
            if flow.missing or flow.unexpected:
                print(
                    f"[demo] {flow.missing} billing events not delivered, {flow.unexpected} others delivered",
                    file=sys.stderr,
                )
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
    parser.add_argument(
        "--events", type=int, default=300, help="CloudEvents posted to the Broker, 3 types in turn (300)"
    )
    parser.add_argument(
        "--event-seconds", type=float, default=15.0, help="seconds the events are posted over (default 15)"
    )
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
