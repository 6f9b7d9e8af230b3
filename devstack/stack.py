"""``up``, ``down`` and ``status`` of the whole devstack."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from devstack import kafka, kube, network, procs, servers
from devstack.config import DEVSTACK_DIR, REPO_ROOT, Layout

KUBE_COMPONENTS = ("kubelet", "kube-controller-manager", "kube-apiserver", "etcd")
COMPONENTS = (*KUBE_COMPONENTS, kafka.NAME, *servers.COMPONENTS)


def _say(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


def build(layout: Layout) -> None:
    """Builds whatever is missing from the cache; each builder shows its own progress."""
    missing_kube = not (layout.kube_bin / "kube-apiserver").exists() or not layout.etcd_bin.exists()
    missing_kafka = not (layout.kafka_libs.parent / ".complete").exists()
    if missing_kafka:
        subprocess.run([str(DEVSTACK_DIR / "build-kafka")], check=True)
    if missing_kube:
        subprocess.run([str(DEVSTACK_DIR / "build-kube"), "all"], check=True)
    # Idempotent and quick when cached: it checks the installed tools' versions against its pins.
    subprocess.run([str(DEVSTACK_DIR / "build-tools"), "all"], check=True)
    # Debian packages of RabbitMQ, Redis and NATS; a no-op when they are installed.
    subprocess.run([str(DEVSTACK_DIR / "build-servers")], check=True)


def _running(layout: Layout, name: str) -> bool:
    return procs.running(name, pid_dir=layout.pids) is not None


def _start_kafka(layout: Layout) -> None:
    if _running(layout, kafka.NAME):
        _say("kafka already running")
        return
    # A broker stopped on its own (or by a test) comes back on its data: its topics and groups are kept.
    # Fresh after devstack/down (which removes the data), or when the configuration changed.
    if kafka.resumable(layout):
        _say("resuming kafka on its data")
        kafka.resume(layout)
        try:
            kafka.wait_ready(layout, timeout=90)
        except RuntimeError as exc:
            _say(f"kafka did not come back on its data ({str(exc).splitlines()[0]}): starting it afresh")
            kafka.stop(layout)
            kafka.start(layout)
            kafka.wait_ready(layout, timeout=90)
    else:
        _say("starting kafka")
        kafka.start(layout)
        kafka.wait_ready(layout, timeout=90)
    _say(f"kafka ready at {layout.kafka_bootstrap} (pods: {layout.kafka_pod_bootstrap})")


def _start_kube(layout: Layout) -> None:
    if not _running(layout, "etcd"):
        # Without its etcd the rest of the control plane holds stale state: start it all afresh.
        for name in KUBE_COMPONENTS:
            entry = procs.running(name, pid_dir=layout.pids)
            if entry is not None:
                procs.stop(entry, pid_dir=layout.pids)
        _say("starting etcd")
        kube.start_etcd(layout)
        kube.wait("etcd", layout, "etcd", timeout=30)
    if not _running(layout, "kube-apiserver"):
        _say("starting kube-apiserver")
        kube.start_apiserver(layout)
        kube.wait("kube-apiserver", layout, "/readyz", timeout=90)
    kube.write_kubeconfig(layout)
    if not _running(layout, "kube-controller-manager"):
        _say("starting kube-controller-manager")
        kube.start_controller_manager(layout)
        kube.wait(
            "kube-controller-manager",
            layout,
            "/api/v1/namespaces/default/serviceaccounts/default",
            timeout=60,
        )
    if not _running(layout, "kubelet"):
        _say("starting the local kubelet")
        procs.spawn(
            "kubelet",
            [sys.executable, "-m", "devstack.kubelet"],
            pid_dir=layout.pids,
            log_file=layout.logs / "kubelet.log",
            cwd=REPO_ROOT,
        )
        kube.wait("kubelet", layout, f"/api/v1/nodes/{layout.node_name}", timeout=30)
    _say(f"kubernetes ready at {layout.apiserver_url}")


def up(layout: Layout) -> None:
    started = time.monotonic()
    build(layout)
    for directory in (layout.run, layout.pids, layout.logs):
        directory.mkdir(parents=True, exist_ok=True)
    network.ensure_bridge(layout.bridge, layout.bridge_ip, layout.pod_prefix_len)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(_start_kafka, layout),
            pool.submit(_start_kube, layout),
            pool.submit(servers.up, layout),
        ]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise RuntimeError("\n\n".join(str(e) for e in errors))
    _say(f"devstack up in {time.monotonic() - started:.1f}s")


def restart(layout: Layout, names: list[str]) -> None:
    """Stops the named components and starts whatever is not running, from this checkout's code: how a
    change to the kubelet (or to the apiserver's flags) takes effect without a full down/up. A restarted
    kubelet deletes the pods it ran (their controllers recreate them)."""
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        raise RuntimeError(f"unknown components {unknown}; the components are {list(COMPONENTS)}")
    for name in names:
        entry = procs.running(name, pid_dir=layout.pids)
        if entry is not None:
            _say(f"stopping {name} (pid {entry.pid})")
            procs.stop(entry, pid_dir=layout.pids, grace=15 if name == "kubelet" else 10)
    up(layout)


def exports(layout: Layout) -> str:
    return (
        f"export KUBECONFIG={layout.kubeconfig}\n"
        f"export QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP={layout.kafka_bootstrap}\n"
        f"export QUEUE_AUTOSCALER_KAFKA_POD_BOOTSTRAP={layout.kafka_pod_bootstrap}\n"
        f"export QUEUE_AUTOSCALER_RABBITMQ_MANAGEMENT_URL={layout.rabbitmq_management_url}\n"
        f"export QUEUE_AUTOSCALER_REDIS_URL={layout.redis_url}\n"
        f"export QUEUE_AUTOSCALER_NATS_MONITORING_URL={layout.nats_monitoring_url}\n"
    )


def down(layout: Layout) -> None:
    servers.stop(layout)
    for name in COMPONENTS:
        entry = procs.running(name, pid_dir=layout.pids)
        if entry is not None:
            _say(f"stopping {name} (pid {entry.pid})")
            procs.stop(entry, pid_dir=layout.pids, grace=15 if name == "kubelet" else 10)
    for entry in procs.recorded(layout.pids):
        if procs.alive(entry):
            _say(f"stopping {entry.name} (pid {entry.pid})")
        procs.stop(entry, pid_dir=layout.pids, grace=2)
    network.remove_all_pod_namespaces()
    network.remove_bridge(layout.bridge)
    for directory in ("etcd", "kafka"):
        shutil.rmtree(layout.run / directory, ignore_errors=True)
    _say("devstack down")


def _api_ok(layout: Layout) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        token = kube.admin_token(layout)
        request = urllib.request.Request(
            f"{layout.apiserver_url}/readyz", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=2, context=ctx) as response:
            return int(response.status) == 200
    except Exception:
        return False


def status(layout: Layout) -> dict[str, object]:
    components = {}
    for name in COMPONENTS:
        entry = procs.running(name, pid_dir=layout.pids)
        components[name] = {"running": entry is not None, "pid": entry.pid if entry else None}
    pods = [e.name for e in procs.recorded(layout.pids) if e.name.startswith("pod-") and procs.alive(e)]
    return {
        "components": components,
        "apiserver_ready": _api_ok(layout),
        "kafka_listening": kafka.ready(layout) if network.bridge_exists(layout.bridge) else False,
        "servers_answering": servers.status(layout),
        "pod_processes": len(pods),
        "pod_namespaces": len(network.pod_namespaces()),
        "run_dir": str(layout.run),
        "kubeconfig": str(layout.kubeconfig),
        "kafka_bootstrap": layout.kafka_bootstrap,
    }


def print_status(layout: Layout) -> bool:
    info = status(layout)
    print(json.dumps(info, indent=2))
    components = info["components"]
    assert isinstance(components, dict)
    return all(c["running"] for c in components.values())
