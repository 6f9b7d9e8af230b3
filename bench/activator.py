"""The activator's steady-state cost: added latency (p50/p99) and throughput against calling the pod
directly, side by side with nginx as a reverse proxy to the same pod, in the same run.

On the devstack it creates its own namespace with one HTTP worker pod (min = max = 1 replica) behind a
Service, runs ``queue-autoscaler run`` and ``queue-autoscaler activator --processes N`` as processes, and
nginx (N worker processes, keepalive upstream) from a configuration it writes into a temporary directory:
the activator gets as many processes as nginx has workers (``--processes``, default the number of CPUs).
For each number of connections in ``--concurrency`` wrk (one thread) holds that many kept-alive
connections for ``--seconds`` per path per round, each sending its next GET when the last is answered;
every round runs the three paths one after the other, in a rotated order, so that machine noise hits all
three alike. Figures are the median over rounds. Everything it starts is stopped, and the
namespace deleted.

    python -m bench.activator [--rounds 3] [--seconds 3] [--concurrency 1,32,256] [--processes 2]
                              [--paced-rates 2000] [--paced-connections 32] [--event-loop uvloop]

Then the same at a paced load: ``--paced-connections`` connections offering about each of ``--paced-rates``
requests/s, a rate all three paths sustain, so that the added latency is the path's own and not the queue
of a saturated one (unpaced, at 32 connections a request's latency is mostly 32 / requests/s).

Results: bench/results/activator.json and bench/results/activator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as kube_client

from autoscaler.observability.log_events import ActivatorLog, ControlLog
from devstack import compiled
from devstack.config import REPO_ROOT
from devstack.harness import (
    deployment,
    devstack_namespace,
    eventually,
    python_container,
    ready_endpoints,
    service,
    unique,
)
from devstack.processes import Process, activator, controller

RESULTS = REPO_ROOT / "bench" / "results"
PREFIX = "queue-autoscaler.dev/"
WORKER = "web"
WORKER_PORT = 8080
TOKEN_ENV = "QUEUE_AUTOSCALER_REPORT_TOKEN"
PATHS = ("direct", "activator", "nginx")


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- the stack: a worker Deployment, the controller and the activator ---------------------------------------


@dataclass
class WorkerStack:
    """One benchmark's namespace on the devstack, with its controller and activator processes."""

    api: kube_client.ApiClient
    namespace: str
    controller: Process
    activator: Process
    proxy_port: int

    @property
    def host(self) -> str:
        return f"{WORKER}.{self.namespace}"

    async def replicas(self) -> int:
        scale = await kube_client.AppsV1Api(self.api).read_namespaced_deployment_scale(WORKER, self.namespace)
        return int(scale.spec.replicas or 0)

    async def endpoints(self) -> list[str]:
        return await ready_endpoints(self.api, self.namespace, WORKER)

    async def pods(self) -> list[str]:
        """The worker's pods that are not being deleted."""
        pods = await kube_client.CoreV1Api(self.api).list_namespaced_pod(
            self.namespace, label_selector=f"app={WORKER}"
        )
        return [p.metadata.name for p in pods.items if p.metadata.deletion_timestamp is None]


@contextlib.asynccontextmanager
async def worker_stack(
    *,
    workdir: Path,
    replicas: int,
    annotations: Mapping[str, str],
    worker_args: Sequence[str] = (),
    controller_args: Sequence[str] = (),
    activator_args: Sequence[str] = (),
    activator_form: str = "source",
    probe_period: int = 1,
) -> AsyncIterator[WorkerStack]:
    """A fresh namespace with the HTTP worker Deployment (``annotations`` without the prefix) and its
    Service, the controller and the activator (``activator_form``: "source", or "compiled" for the build
    devstack.compiled makes of setup.py's compiled modules); all stopped and deleted afterwards."""
    form_env = {} if activator_form == "source" else compiled.environment(compiled.build())
    async with devstack_namespace("bench") as (devstack, api, namespace):
        core = kube_client.CoreV1Api(api)
        processes: list[Process] = []
        try:
            container = python_container(
                WORKER,
                "devstack.workers.http_worker",
                ["--port", str(WORKER_PORT), *worker_args],
                readiness_port=WORKER_PORT,
            )
            container["readinessProbe"]["periodSeconds"] = probe_period
            notes = {
                PREFIX + "http-service": WORKER,
                PREFIX + "http-port": str(WORKER_PORT),
                **{PREFIX + k: v for k, v in annotations.items()},
            }
            await core.create_namespaced_service(namespace, service(WORKER, WORKER_PORT))
            await kube_client.AppsV1Api(api).create_namespaced_deployment(
                namespace, deployment(WORKER, container, replicas=replicas, annotations=notes)
            )
            env = {TOKEN_ENV: unique("token")}
            ctl = controller(
                devstack, workdir / "controller.log", namespaces=[namespace], extra=controller_args, env=env
            )
            processes.append(ctl.start())
            reports = await ctl.wait_port("reports")
            act = activator(
                devstack,
                workdir / "activator.log",
                namespaces=[namespace],
                controller_url=f"http://127.0.0.1:{reports}/v1/reports",
                extra=activator_args,
                env={**env, **form_env},
            )
            processes.append(act.start())
            proxy_port = await act.wait_port("proxy")
            if form_env and act.proc is not None and not compiled.runs_compiled(act.proc.pid):
                raise SystemExit(f"the activator (pid {act.proc.pid}) did not load its compiled modules")

            async def routed() -> bool:
                act.assert_alive()
                return any(
                    e.get("event") == ActivatorLog.ROUTE_UPDATED and e.get("namespace") == namespace
                    for e in act.logs()
                )

            await eventually(routed, bool, timeout=30, what="the activator to route the worker")

            async def decided() -> bool:
                ctl.assert_alive()
                return any(
                    e.get("event") == ControlLog.DECISION_CHANGED and e.get("namespace") == namespace
                    for e in ctl.logs()
                )

            await eventually(decided, bool, timeout=30, what="the controller's first decision")
            yield WorkerStack(api, namespace, ctl, act, proxy_port)
        finally:
            for process in reversed(processes):
                process.stop()


@contextlib.contextmanager
def log_dir(keep: Path | None, name: str) -> Iterator[Path]:
    """Where the controller's and activator's logs go: a new directory under ``keep`` (kept), else a
    temporary one (deleted)."""
    if keep is not None:
        path = keep / f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        path.mkdir(parents=True)
        say(f"logs in {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        yield Path(tmp)


# --- nginx ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream worker {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://worker;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise SystemExit("nginx not found: install it (devstack/build-tools bench-tools)")
    return found


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ").removeprefix("nginx/")


@contextlib.asynccontextmanager
async def nginx(upstream: str, *, workers: int) -> AsyncIterator[int]:
    """nginx in the foreground on 127.0.0.1, proxying to ``upstream`` (ip:port); yields its port."""
    binary = nginx_binary()
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, tmp=tmp, upstream=upstream, port=port))
        error_log = Path(tmp) / "error.log"
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-p",
            tmp,
            "-e",
            str(error_log),
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:

            async def listening() -> bool:
                if proc.returncode is not None:
                    log = error_log.read_text() if error_log.exists() else ""
                    raise RuntimeError(f"nginx exited with {proc.returncode}: {log}")
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                    return True
                return False

            await eventually(listening, bool, timeout=10, what="nginx to listen")
            yield port
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGQUIT)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


# --- the load generator -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: Mapping[str, str]
    # The proxy's process: its CPU, with its children's, is counted per answered request.
    pid: int | None = None


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every process under it."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                stats[int(entry.name)] = stat[stat.rindex(")") + 2 :].split()  # from the state field on
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        if current in stats:
            total += (int(stats[current][11]) + int(stats[current][12])) / os.sysconf("SC_CLK_TCK")
            pending += children.get(current, [])
    return total


def quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values (nan when empty)."""
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


# wrk's summary as one JSON line: its latency histogram's percentiles (µs) and its error counts.
WRK_REPORT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"status_errors": %d, "socket_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk not found: install it (devstack/build-tools bench-tools)")
    return found


def wrk_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).split()
    return first[1] if len(first) > 1 else "unknown"


# Paced load: each connection waits a random 0..2x``{mean}`` ms after an answer before its next request, so
# that the connections together offer about ``rate`` requests/s, spread out rather than in bursts.
WRK_PACE = """\
math.randomseed(os.time())
delay = function()
  return math.random(0, {twice})
end
"""


async def load(
    target: Target, *, seconds: int, concurrency: int, rate: int | None = None
) -> dict[str, float | int]:
    """wrk (one thread, C) holding ``concurrency`` kept-alive connections for ``seconds``, each sending its
    next GET as soon as the last is answered, or with ``rate`` paced to about that many requests/s: the
    figures of that batch."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as script:
        script.write(WRK_REPORT)
        if rate is not None:
            script.write(WRK_PACE.format(twice=max(1, round(2 * 1000 * concurrency / rate))))
        script.flush()
        headers = [arg for name, value in target.headers.items() for arg in ("-H", f"{name}: {value}")]
        cpu_before = process_tree_cpu(target.pid) if target.pid is not None else 0.0
        proc = await asyncio.create_subprocess_exec(
            wrk_binary(),
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "-s",
            script.name,
            *headers,
            target.url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        cpu = process_tree_cpu(target.pid) - cpu_before if target.pid is not None else None
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("WRK-RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk against {target.url} exited with {proc.returncode}: {text.strip()[-400:]}")
    found = json.loads(line.removeprefix("WRK-RESULT "))
    ok = int(found["requests"]) - int(found["status_errors"])
    figures: dict[str, float | int] = {
        "p50_ms": round(found["p50_us"] / 1000, 3),
        "p99_ms": round(found["p99_us"] / 1000, 3),
        "rps": round(ok / (found["duration_us"] / 1e6), 1),
        "ok": ok,
        "errors": int(found["status_errors"]) + int(found["socket_errors"]),
    }
    if cpu is not None and ok:
        figures["cpu_us_per_request"] = round(cpu * 1e6 / ok, 1)
    return figures


# --- the run ----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "os": platform.platform()}


def versions(**extra: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("queue-autoscaler", "aiohttp", "uvloop", "httptools"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return {**found, **extra}


def command_line(module: str) -> str:
    return shlex.join(["python", "-m", module, *sys.argv[1:]])


def median_figures(samples: Sequence[Mapping[str, float | int]]) -> dict[str, float | int]:
    figures: dict[str, float | int] = {
        "p50_ms": round(statistics.median(s["p50_ms"] for s in samples), 3),
        "p99_ms": round(statistics.median(s["p99_ms"] for s in samples), 3),
        "rps": round(statistics.median(s["rps"] for s in samples), 1),
        "errors": sum(int(s["errors"]) for s in samples),
    }
    cpu = [s["cpu_us_per_request"] for s in samples if "cpu_us_per_request" in s]
    if cpu:
        figures["cpu_us_per_request"] = round(statistics.median(cpu), 1)
    return figures


async def measure(
    targets: Mapping[str, Target], *, rounds: int, seconds: int, concurrency: int, rate: int | None = None
) -> dict[str, Any]:
    """``rounds`` rounds of the three paths at ``concurrency`` connections (paced to ``rate`` requests/s, or
    as fast as answered): medians, added, every round."""
    measured: list[dict[str, Any]] = []
    paced = "" if rate is None else f" paced at {rate}/s"
    for number in range(rounds):
        order = PATHS[number % len(PATHS) :] + PATHS[: number % len(PATHS)]
        figures: dict[str, dict[str, float | int]] = {}
        for name in order:
            figures[name] = await load(targets[name], seconds=seconds, concurrency=concurrency, rate=rate)
            say(f"{concurrency} connections{paced}, round {number + 1} {name}: {figures[name]}")
        measured.append({"round": number + 1, "order": list(order), "paths": figures})
    summary = {name: median_figures([r["paths"][name] for r in measured]) for name in PATHS}
    added = {
        name: {
            "p50_ms": round(summary[name]["p50_ms"] - summary["direct"]["p50_ms"], 3),
            "p99_ms": round(summary[name]["p99_ms"] - summary["direct"]["p99_ms"], 3),
        }
        for name in ("activator", "nginx")
    }
    ratio = (
        round(summary["activator"]["rps"] / summary["nginx"]["rps"], 3) if summary["nginx"]["rps"] else None
    )
    return {
        "concurrency": concurrency,
        "rate": rate,
        "summary": summary,
        "added_vs_direct": added,
        "activator_over_nginx_rps": ratio,
        "rounds": measured,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with log_dir(args.logs, "activator") as logs:
        async with worker_stack(
            workdir=logs,
            replicas=1,
            annotations={"min-replicas": "1", "max-replicas": "1"},
            worker_args=["--delay", str(args.worker_delay)],
            # The load generator opens up to max(--concurrency, --paced-connections) connections from one
            # address.
            activator_args=[
                "--processes",
                str(args.processes),
                "--event-loop",
                args.event_loop,
                "--max-connections-per-client",
                str(4 * max(*args.concurrency, args.paced_connections)),
            ],
            activator_form=args.form,
        ) as stack:
            (pod_ip,) = await eventually(
                stack.endpoints, lambda found: len(found) == 1, timeout=120, what="one ready worker pod"
            )
            upstream = f"{pod_ip}:{WORKER_PORT}"
            say(f"worker pod at {upstream}; activator on 127.0.0.1:{stack.proxy_port}")
            async with nginx(upstream, workers=args.processes) as nginx_port:
                targets = {
                    "direct": Target("direct", f"http://{upstream}/", {}),
                    "activator": Target(
                        "activator",
                        f"http://127.0.0.1:{stack.proxy_port}/",
                        {"Host": stack.host},
                        pid=stack.activator.proc.pid if stack.activator.proc is not None else None,
                    ),
                    "nginx": Target("nginx", f"http://127.0.0.1:{nginx_port}/", {"Host": stack.host}),
                }
                for target in targets.values():
                    warm = await load(target, seconds=args.warmup, concurrency=max(args.concurrency))
                    if warm["errors"]:
                        raise SystemExit(
                            f"{target.name}: {warm['errors']} warm-up requests failed in {args.warmup} s"
                        )
                levels = [
                    await measure(targets, rounds=args.rounds, seconds=args.seconds, concurrency=level)
                    for level in args.concurrency
                ]
                paced = [
                    await measure(
                        targets,
                        rounds=args.rounds,
                        seconds=args.seconds,
                        concurrency=args.paced_connections,
                        rate=rate,
                    )
                    for rate in args.paced_rates
                ]
            nginx_v = nginx_version(nginx_binary())
    return {
        "benchmark": "activator steady state",
        "command": command_line("bench.activator"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(nginx=nginx_v),
        "settings": {
            "rounds": args.rounds,
            "seconds_per_path_per_round": args.seconds,
            "load_generator": f"wrk {wrk_version(wrk_binary())}, 1 thread",
            "concurrency": list(args.concurrency),
            "warmup_s_per_path": args.warmup,
            "worker_delay_s": args.worker_delay,
            "nginx_worker_processes": args.processes,
            "activator_processes": args.processes,
            "activator_event_loop": args.event_loop,
            "activator_form": args.form,
        },
        "levels": levels,
        "paced": paced,
    }


def header(title: str, result: Mapping[str, Any]) -> list[str]:
    """The title and the command, date, machine and versions lines of a result's Markdown."""
    return [
        f"# {title}",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}",
        f"- machine: nproc {result['machine']['nproc']}, {result['machine']['cpu']}, "
        f"kernel {result['machine']['kernel']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
    ]


def markdown(result: Mapping[str, Any]) -> str:
    s = result["settings"]
    lines = [
        *header("Activator steady state: added latency and throughput", result),
        f"- load: {s['rounds']} rounds x {s['seconds_per_path_per_round']} s of GETs per path at each of "
        + ", ".join(str(c) for c in s["concurrency"])
        + f" concurrent keep-alive connections ({s['load_generator']}: each connection sends its next "
        f"request when the last is answered), {s['warmup_s_per_path']} s warm-up per path; the paths' "
        "order rotates every round",
        f"- worker: one devstack pod running devstack.workers.http_worker (delay {s['worker_delay_s']} s); "
        f"the activator runs {s['activator_processes']} process(es) (`--processes`) on "
        f"{s.get('activator_event_loop', 'asyncio')} (`--event-loop`), "
        f"{s.get('activator_form', 'source')} (`--form`), nginx "
        f"{s['nginx_worker_processes']} worker process(es) with a keepalive upstream",
        "- load generator, activator, nginx and the worker pod share this machine's CPUs",
    ]
    failed = failed_paths(result)
    if failed:
        lines += ["", f"**Not a valid measurement: requests failed on {', '.join(failed)}.**"]
    for level in [*result["levels"], *result.get("paced", [])]:
        if level.get("rate") is None:
            cpu = level["summary"]["activator"].get("cpu_us_per_request")
            title = (
                f"## {level['concurrency']} connections, as fast as answered: median over rounds "
                f"(activator / nginx requests/s: {level['activator_over_nginx_rps']}"
                + ("" if cpu is None else f"; the activator's CPU per request: {cpu:.0f} µs")
                + ")"
            )
        else:
            title = (
                f"## {level['concurrency']} connections paced at about {level['rate']} requests/s "
                "(each waits a random 0..2x its share after an answer): median over rounds"
            )
        lines += [
            "",
            title,
            "",
            "| path | p50 ms | p99 ms | requests/s | added p50 ms | added p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in PATHS:
            row = level["summary"][name]
            added = level["added_vs_direct"].get(name)
            extra = "| — | — |" if added is None else f"| {added['p50_ms']:+.2f} | {added['p99_ms']:+.2f} |"
            figures = f"| {name} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['rps']:.0f} "
            lines.append(f"{figures}{extra} {row['errors']} |")
    lines += [
        "",
        "## Every round",
        "",
        "| connections | round | path | p50 ms | p99 ms | requests/s | errors |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for level in [*result["levels"], *result.get("paced", [])]:
        paced = "" if level.get("rate") is None else f" at {level['rate']}/s"
        for entry in level["rounds"]:
            for name in entry["order"]:
                row = entry["paths"][name]
                lines.append(
                    f"| {level['concurrency']}{paced} | {entry['round']} | {name} | {row['p50_ms']:.2f} | "
                    f"{row['p99_ms']:.2f} | {row['rps']:.0f} | {row['errors']} |"
                )
    return "\n".join(lines) + "\n"


def failed_paths(result: Mapping[str, Any]) -> list[str]:
    """Every "path at N connections" with failed requests (socket errors or non-2xx answers) in any round."""
    failed: list[str] = []
    for level in [*result["levels"], *result.get("paced", [])]:
        paced = "" if level.get("rate") is None else f" paced at {level['rate']}/s"
        for name in PATHS:
            if any(entry["paths"][name]["errors"] for entry in level["rounds"]):
                failed.append(f"{name} at {level['concurrency']} connections{paced}")
    return failed


def write_results(name: str, result: Mapping[str, Any], text: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(text)
    say(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")


def connection_counts(text: str) -> tuple[int, ...]:
    """``--concurrency``: a comma list of connection counts, e.g. 1,32,256."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of integers, e.g. 1,32,256") from None


def add_form_argument(parser: argparse.ArgumentParser) -> None:
    """``--form``: which activator a bench runs (``worker_stack``'s ``activator_form``)."""
    parser.add_argument(
        "--form",
        choices=("compiled", "source"),
        default="compiled",
        help="the activator as the image ships it, its request path compiled by mypyc (setup.py; built "
        "once per source into $QA_CACHE/compiled), or run from the source (default compiled)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.activator",
        description="Steady-state added latency (p50/p99) and throughput of the activator against calling "
        "the worker pod directly and against nginx as a reverse proxy to the same pod, on the devstack.",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every path once (default 3)")
    parser.add_argument(
        "--seconds", type=int, default=3, help="seconds of load per path per round (default 3)"
    )
    parser.add_argument(
        "--concurrency",
        type=connection_counts,
        default=(1, 32, 256),
        help="comma list of concurrent connections, each measured in turn (default 1,32,256)",
    )
    parser.add_argument(
        "--paced-rates",
        type=connection_counts,
        default=(2000,),
        help="after the unpaced levels, requests/s to pace the load at, each measured in turn, over "
        "--paced-connections connections (default 2000; a rate every path sustains)",
    )
    parser.add_argument(
        "--paced-connections",
        type=int,
        default=32,
        help="connections of the paced measurements (default 32)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per path (default 1)")
    parser.add_argument(
        "--worker-delay", type=float, default=0.0, help="seconds the worker waits per request (default 0)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="activator processes and nginx worker processes, the same number (default: the CPUs)",
    )
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the activator's event loop (its --event-loop; default uvloop)",
    )
    add_form_argument(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the controller and activator logs under this directory"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    counts = (args.rounds, args.seconds, args.warmup, args.processes, args.paced_connections)
    if min(*counts, *args.concurrency, *args.paced_rates) < 1:
        raise SystemExit(
            "--rounds, --seconds, --warmup, --concurrency, --processes, --paced-rates and "
            "--paced-connections must be >= 1"
        )
    result = asyncio.run(run(args))
    text = markdown(result)
    write_results("activator", result, text, args.out)
    print(text)
    failed = failed_paths(result)
    if failed:
        say(f"requests failed on {', '.join(failed)}: not a valid measurement")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
