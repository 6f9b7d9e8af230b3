"""Each activator process its own watches, or one watch set shared: what each costs, measured.

Each activator process (``--processes``) runs its own Deployment and EndpointSlice watches. The alternative
is one process watching and feeding the others the changes over pipes. This bench measures both sides.

On the devstack: a namespace with ``--deployments`` annotated Deployments at 0 replicas, each with a Service
and an EndpointSlice of ``--endpoints`` ready addresses, and ``--other-slices`` slices of Services no target
routes to. For each count in ``--processes``, ``queue-autoscaler activator --processes N`` (and a controller
for its reports) is started; once every route is there: each activator process's PSS and USS
(``/proc/<pid>/smaps_rollup``), and the API server's open watches on Deployments and EndpointSlices (its
``apiserver_longrunning_requests`` gauge) beyond those open before the activator started; then ``--churn``
slice updates at ``--rate`` per second (each flips one endpoint's ready condition, so every update changes
the endpoints of one target) and the CPU time (utime + stime) each activator process spent over the churn.

The shared alternative, on the same slices, in this process and a forked child: the bytes the watch caches
hold (tracemalloc: the Slices and merged Services a child fed over a pipe would not hold); the CPU per slice
update of the watch's own work (JSON decode, ``parse_slice``, ``SliceCache.apply``), which each process pays
now; and the CPU per update and child of pickling the change, sending it through a pipe, and receiving and
unpickling it in the child, which sharing would pay instead.

    python -m bench.watch_sharing [--deployments 200] [--endpoints 10] [--other-slices 300]
                                  [--processes 1,2] [--churn 2000] [--rate 200]

Results: bench/results/watch_sharing.json and bench/results/watch_sharing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as kube_client
from prometheus_client import CollectorRegistry

from autoscaler.activator import server, watching
from autoscaler.kube import endpointslices, targets, watch
from bench.activator import machine, versions
from devstack.config import REPO_ROOT
from devstack.harness import (
    Devstack,
    deployment,
    devstack_namespace,
    eventually,
    python_container,
    unique,
)
from devstack.processes import Process, activator, controller

RESULTS = REPO_ROOT / "bench" / "results"
PREFIX = "queue-autoscaler.dev/"
PORT = 8080
TOKEN_ENV = "QUEUE_AUTOSCALER_REPORT_TOKEN"
TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def endpoint_slice(
    name: str, service: str, index: int, endpoints: int, *, ready: bool = True
) -> dict[str, Any]:
    """A slice of ``endpoints`` addresses (10.240.<index>.<n>, never contacted) for ``service``."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "bench.watch-sharing",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [f"10.{240 + index // 250}.{index % 250}.{n + 1}"],
                "conditions": {"ready": ready if n == 0 else True},
            }
            for n in range(endpoints)
        ],
    }


# --- the devstack side: real activator processes ------------------------------------------------------------


async def populate(api: kube_client.ApiClient, namespace: str, args: argparse.Namespace) -> list[str]:
    """The Deployments, Services and slices; returns the names of the targets' slices (the churned ones)."""
    core, apps, discovery = (
        kube_client.CoreV1Api(api),
        kube_client.AppsV1Api(api),
        kube_client.DiscoveryV1Api(api),
    )
    container = python_container("worker", "devstack.workers.http_worker", ["--port", str(PORT)])
    routed: list[str] = []
    for i in range(args.deployments + args.other_slices):
        name = f"w{i}"
        await core.create_namespaced_service(
            namespace, {"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": PORT}]}}
        )
        await discovery.create_namespaced_endpoint_slice(
            namespace, endpoint_slice(f"{name}-1", name, i, args.endpoints)
        )
        if i < args.deployments:
            notes = {PREFIX + "http-service": name, PREFIX + "http-port": str(PORT)}
            await apps.create_namespaced_deployment(
                namespace, deployment(name, container, replicas=0, annotations=notes)
            )
            routed.append(f"{name}-1")
    return routed


async def open_watches(api: kube_client.ApiClient) -> dict[str, int]:
    """The API server's open WATCH requests on Deployments and EndpointSlices, by resource."""
    answer = await api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)
    text = (await answer[0].read()).decode() if isinstance(answer, tuple) else (await answer.read()).decode()
    counts = {"deployments": 0, "endpointslices": 0}
    for line in text.splitlines():
        if not line.startswith("apiserver_longrunning_requests{") or 'verb="WATCH"' not in line:
            continue
        for resource in counts:
            if f'resource="{resource}"' in line:
                counts[resource] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def memory_kib(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0])
    return {
        "pss_kib": fields["Pss"],
        "uss_kib": fields["Private_Clean"] + fields["Private_Dirty"],
        "rss_kib": fields["Rss"],
    }


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / TICKS


async def churn(
    api: kube_client.ApiClient, namespace: str, slices: Sequence[str], args: argparse.Namespace
) -> float:
    """``--churn`` updates at ``--rate``/s over the targets' slices; returns the seconds it took."""
    discovery = kube_client.DiscoveryV1Api(api)
    started = time.monotonic()
    for n in range(args.churn):
        name = slices[n % len(slices)]
        index = int(name[1:].split("-")[0])
        ready = (n // len(slices)) % 2 == 1
        body = endpoint_slice(name, name.rsplit("-", 1)[0], index, args.endpoints, ready=ready)
        await discovery.replace_namespaced_endpoint_slice(name, namespace, body)
        await asyncio.sleep(max(0.0, started + (n + 1) / args.rate - time.monotonic()))
    return time.monotonic() - started


async def measure_processes(
    devstack: Devstack, api: kube_client.ApiClient, namespace: str, slices: Sequence[str], count: int,
    args: argparse.Namespace, workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    env = {TOKEN_ENV: unique("token")}
    ctl = controller(devstack, workdir / f"controller-{count}.log", namespaces=[namespace], env=env).start()
    try:
        reports = await ctl.wait_port("reports")
        before = await open_watches(api)
        act = activator(
            devstack,
            workdir / f"activator-{count}.log",
            namespaces=[namespace],
            controller_url=f"http://127.0.0.1:{reports}/v1/reports",
            extra=["--processes", str(count)],
            env=env,
        ).start()
        try:
            await act.wait_port("proxy")
            assert act.proc is not None
            pids = await eventually(
                lambda: _children_of(act, count),
                lambda found: len(found) == count,
                timeout=30,
                what="children",
            )
            await eventually(
                lambda: _routes_everywhere(act, namespace, args.deployments, count),
                bool,
                timeout=60,
                what=f"{args.deployments} routes in each of {count} activator processes",
            )
            await asyncio.sleep(2)
            watches = {k: v - before[k] for k, v in (await open_watches(api)).items()}
            memory = [memory_kib(pid) for pid in pids]
            supervisor = memory_kib(act.proc.pid) if count > 1 else None
            idle_from = [cpu_seconds(pid) for pid in pids]
            await asyncio.sleep(3)
            idle = [(cpu_seconds(pid) - a) / 3 for pid, a in zip(pids, idle_from, strict=True)]
            cpu_from = [cpu_seconds(pid) for pid in pids]
            took = await churn(api, namespace, slices, args)
            await asyncio.sleep(1)
            spent = [
                cpu_seconds(pid) - a - rate * (took + 1)
                for pid, a, rate in zip(pids, cpu_from, idle, strict=True)
            ]
        finally:
            act.stop()
    finally:
        ctl.stop()
    return {
        "processes": count,
        "memory": memory,
        "supervisor_memory": supervisor,
        "watches": watches,
        "churn_seconds": round(took, 2),
        "cpu_ms_per_1000_updates": [round(1000 * s * 1000 / args.churn, 1) for s in spent],
    }


async def _children_of(act: Process, count: int) -> list[int]:
    assert act.proc is not None
    return [act.proc.pid] if count == 1 else children(act.proc.pid)


async def _routes_everywhere(act: Process, namespace: str, deployments: int, count: int) -> bool:
    """Each process logs a route update per Deployment once it has it: ``count`` x ``deployments`` of them."""
    act.assert_alive()
    updated = [e for e in act.logged("activator.route.updated") if e.get("namespace") == namespace]
    return len(updated) >= count * deployments


# --- the shared alternative's parts, on the same objects ----------------------------------------------------


async def raw_objects(api: kube_client.ApiClient, namespace: str) -> tuple[list[Any], list[Any]]:
    """The namespace's EndpointSlices and Deployments as the watches receive them (JSON)."""
    slices = await kube_client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, _preload_content=False
    )
    found = await kube_client.AppsV1Api(api).list_namespaced_deployment(namespace, _preload_content=False)
    return json.loads(await slices.read())["items"], json.loads(await found.read())["items"]


def cache_bytes(raw_slices: Sequence[Any], raw_deployments: Sequence[Any]) -> dict[str, int]:
    """The bytes the two watch caches hold for these objects (what a child fed over a pipe would not)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        slices = endpointslices.SliceCache()
        slices.apply(watch.Listed(tuple(endpointslices.parse_slice(o) for o in raw_slices), "1"))
        after_slices = tracemalloc.get_traced_memory()[0]
        deployments = targets.TargetCache()
        deployments.apply(watch.Listed(tuple(targets.parse_deployment(o) for o in raw_deployments), "1"))
        after_deployments = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {"slices": after_slices - base, "deployments": after_deployments - after_slices}


def updates(raw_slices: Sequence[Any], count: int) -> list[bytes]:
    """``count`` watch events as the API server streams them: a MODIFIED line per slice update."""
    lines: list[bytes] = []
    for n in range(count):
        obj = json.loads(json.dumps(raw_slices[n % len(raw_slices)]))
        endpoints = obj.get("endpoints") or []
        if endpoints:
            endpoints[0]["conditions"]["ready"] = (n // len(raw_slices)) % 2 == 1
        lines.append(json.dumps({"type": "MODIFIED", "object": obj}).encode())
    return lines


def own_watch_cpu(raw_slices: Sequence[Any], lines: Sequence[bytes]) -> tuple[float, list[Any]]:
    """CPU seconds of the watch's own work for ``lines`` (decode, parse, merge), and the changes it made."""
    cache = endpointslices.SliceCache()
    cache.apply(watch.Listed(tuple(endpointslices.parse_slice(o) for o in raw_slices), "1"))
    made: list[Any] = []
    started = time.process_time()
    for line in lines:
        event = json.loads(line)
        made += cache.apply(watch.Modified(endpointslices.parse_slice(event["object"])))
    return time.process_time() - started, made


def apply_cpu(raw_slices: Sequence[Any], raw_deployments: Sequence[Any], changes: Sequence[Any]) -> float:
    """CPU seconds to apply ``changes`` to an activator's routes and endpoints, as each process does in
    both designs (``watching.EndpointRouter`` over the same Deployments and slices)."""
    activator = server.Activator(registry=CollectorRegistry())
    cache = endpointslices.SliceCache()
    cache.apply(watch.Listed(tuple(endpointslices.parse_slice(o) for o in raw_slices), "1"))
    router = watching.EndpointRouter(
        activator, lambda namespace, name: cache.services.get(endpointslices.ServiceKey(namespace, name))
    )
    for info in (targets.parse_deployment(o) for o in raw_deployments):
        router.deployment_changed(info.key, info)
    started = time.process_time()
    for key, _ in changes:
        router.service_changed(key.namespace, key.name)
    return time.process_time() - started


def _receive(connection: Any, count: int, report: Any) -> None:
    started = time.process_time()
    for _ in range(count):
        pickle.loads(connection.recv_bytes())
    report.send(time.process_time() - started)


def pipe_cpu(changes: Sequence[Any]) -> tuple[float, float]:
    """CPU seconds to pickle and send ``changes`` to a forked child, and the child's to receive them."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    report_ours, report_theirs = context.Pipe()
    child = context.Process(target=_receive, args=(theirs, len(changes), report_theirs))
    child.start()
    try:
        started = time.process_time()
        for change in changes:
            ours.send_bytes(pickle.dumps(_plain(change), protocol=pickle.HIGHEST_PROTOCOL))
        sent = time.process_time() - started
        received = float(report_ours.recv())
    finally:
        child.join(timeout=30)
        if child.exitcode is None:
            child.kill()
    return sent, received


def _plain(change: Any) -> tuple[Any, ...]:
    """A change as plain data, as a watcher would send it (a mapping proxy does not pickle)."""
    key, service = change
    if service is None:
        return (key.namespace, key.name, None)
    return (key.namespace, key.name, service.addresses, dict(service.ports), service.not_ready)


# --- the run ------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def populated(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[Devstack, kube_client.ApiClient, str, list[str]]]:
    async with devstack_namespace("watch-sharing") as (devstack, api, namespace):
        say(f"creating {args.deployments} Deployments and {args.deployments + args.other_slices} slices")
        yield devstack, api, namespace, await populate(api, namespace, args)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="watch-sharing-") as tmp:
        async with populated(args) as (devstack, api, namespace, slices):
            measured = []
            for count in args.processes:
                say(f"activator --processes {count}: memory, watches, {args.churn} slice updates")
                measured.append(
                    await measure_processes(devstack, api, namespace, slices, count, args, Path(tmp))
                )
            raw_slices, raw_deployments = await raw_objects(api, namespace)
    say("the shared alternative's parts: cache bytes, watch work, pipe fan-out")
    lines = updates(raw_slices[: args.deployments], args.churn)
    own, changes = own_watch_cpu(raw_slices, lines)
    applied = apply_cpu(raw_slices, raw_deployments, changes)
    sent, received = pipe_cpu(changes)
    per_1000 = 1000 * 1000 / args.churn
    return {
        "command": " ".join(["python -m bench.watch_sharing", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "deployments": args.deployments,
            "endpoints_per_slice": args.endpoints,
            "other_slices": args.other_slices,
            "churn": args.churn,
            "rate": args.rate,
        },
        "processes": measured,
        "shared_parts": {
            "cache_bytes": cache_bytes(raw_slices, raw_deployments),
            "slice_json_bytes": sum(len(json.dumps(o)) for o in raw_slices),
            "changes": len(changes),
            "own_watch_cpu_ms_per_1000_updates": round(own * per_1000, 1),
            "apply_cpu_ms_per_1000_updates": round(applied * per_1000, 1),
            "pipe_send_cpu_ms_per_1000_updates_per_child": round(sent * per_1000, 1),
            "pipe_receive_cpu_ms_per_1000_updates_per_child": round(received * per_1000, 1),
        },
    }


def markdown(result: dict[str, Any]) -> str:
    s, parts = result["settings"], result["shared_parts"]
    lines = [
        "# One watch set per activator process, or one shared: what each costs",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}",
        f"- machine: nproc {result['machine']['nproc']}, {result['machine']['cpu']}",
        f"- cluster: {s['deployments']} annotated Deployments (0 replicas), each with a Service and an "
        f"EndpointSlice of {s['endpoints_per_slice']} ready addresses, and {s['other_slices']} slices of "
        "Services no target routes to, in the activator's namespace",
        f"- churn: {s['churn']} slice updates at {s['rate']}/s, each flipping one endpoint's ready "
        "condition of a target's slice",
        "",
        "## Each process its own watches (measured: the real activator on the devstack)",
        "",
        "| processes | PSS per process MiB | USS per process MiB | supervisor PSS MiB | API server watches "
        "opened (Deployments + EndpointSlices) | CPU per 1000 slice updates, per process |",
        "|---:|---|---|---:|---:|---|",
    ]
    for row in result["processes"]:
        pss = ", ".join(f"{m['pss_kib'] / 1024:.1f}" for m in row["memory"])
        uss = ", ".join(f"{m['uss_kib'] / 1024:.1f}" for m in row["memory"])
        cpu = ", ".join(f"{c:.0f} ms" for c in row["cpu_ms_per_1000_updates"])
        watches = row["watches"]["deployments"] + row["watches"]["endpointslices"]
        parent = row["supervisor_memory"]
        supervisor = "— (it serves)" if parent is None else f"{parent['pss_kib'] / 1024:.1f}"
        lines.append(f"| {row['processes']} | {pss} | {uss} | {supervisor} | {watches} | {cpu} |")
    cache = parts["cache_bytes"]
    own = parts["own_watch_cpu_ms_per_1000_updates"]
    applied = parts["apply_cpu_ms_per_1000_updates"]
    send = parts["pipe_send_cpu_ms_per_1000_updates_per_child"]
    receive = parts["pipe_receive_cpu_ms_per_1000_updates_per_child"]
    lines += [
        "",
        "## The shared alternative's parts (measured here, on the same objects)",
        "",
        "| what | own watch set (every process) | shared (per child fed over a pipe) |",
        "|---|---:|---:|",
        f"| watch caches held | {(cache['slices'] + cache['deployments']) / 1024:.0f} KiB "
        f"(slices {cache['slices'] / 1024:.0f}, Deployments {cache['deployments'] / 1024:.0f}) | 0 |",
        f"| CPU per 1000 slice updates in the process | {own:.0f} ms (JSON decode, parse, merge) | "
        f"{receive:.0f} ms (receive, unpickle) + the watcher's {send:.0f} ms to pickle and send |",
        f"| CPU per 1000 slice updates to apply them to the routes and endpoints | {applied:.0f} ms | "
        f"{applied:.0f} ms |",
        "| API server watch streams | 2 | 0 (the watcher keeps 2) |",
        "",
        "The process-level CPU per update above is larger than decode + parse + merge + apply: it includes "
        "reading the watch stream (TLS, kubernetes-asyncio's line reader) and the event loop's own work, "
        "which a child fed over a pipe would replace by one pipe read.",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.watch_sharing",
        description="What each activator process's own watch set costs (memory, API server watches, CPU per "
        "EndpointSlice update), and the parts a shared watch set would cost instead (pipe fan-out).",
    )
    parser.add_argument("--deployments", type=int, default=200, help="annotated Deployments (default 200)")
    parser.add_argument("--endpoints", type=int, default=10, help="addresses per EndpointSlice (default 10)")
    parser.add_argument(
        "--other-slices", type=int, default=300, help="slices of Services no target uses (default 300)"
    )
    parser.add_argument(
        "--processes", type=_counts, default=(1, 2), help="activator process counts, comma list (default 1,2)"
    )
    parser.add_argument("--churn", type=int, default=2000, help="slice updates (default 2000)")
    parser.add_argument("--rate", type=float, default=200.0, help="slice updates per second (default 200)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    return parser


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of process counts, e.g. 1,2") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every count at least 1")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("deployments", "endpoints", "churn"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name}={getattr(args, name)}: at least 1")
    if args.other_slices < 0 or args.rate <= 0:
        raise SystemExit("--other-slices: 0 or more; --rate: more than 0")
    result = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "watch_sharing.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "watch_sharing.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
