"""A local kubelet: runs the pods of the devstack's one Node as real processes.

It registers the Node, binds pending pods to it (there is no scheduler), starts each pod's first container
(``command`` + ``args`` with its ``env``) inside a network namespace of its own, probes readiness
(httpGet, tcpSocket and exec), and reports phase, conditions and podIP. On deletion it sends SIGTERM, waits
for the grace period, sends SIGKILL and removes the pod. The real deployment, replicaset and endpointslice
controllers do the rest. It serves the containers' output on the kubelet API (``kubectl logs``, see
``kubelet_api``).

Every image is this repository: a container's working directory defaults to the repository root and a
command starting with ``python`` runs this project's interpreter (its virtualenv, with the project's
dependencies), as ``python`` in the project's container image does.

Run as ``python -m devstack.kubelet``; ``devstack/up`` starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from devstack import kubelet_api, network, pki, procs
from devstack.config import REPO_ROOT, Layout, layout

POD_PROCESS_PREFIX = "pod-"
RESTART_BACKOFF_MAX = 10.0
PYTHON_COMMANDS = frozenset({"python", "python3", f"python3.{sys.version_info.minor}"})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log(message: str) -> None:
    print(f"{_now()} kubelet: {message}", flush=True)


@dataclass
class PodRuntime:
    """What the kubelet holds for one pod it runs."""

    uid: str
    namespace: str
    name: str
    ip: str
    netns: str
    veth: str
    log_path: Path
    container: str = ""
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    restart_count: int = 0
    terminating: bool = False
    started_at: str = field(default_factory=_now)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # One status write at a time, each built when it is sent: a slower earlier write can never land after a
    # later one and leave the pod's Ready condition stale.
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def is_terminating(self) -> bool:
        # A method, not the attribute, where other tasks may have flipped it during an await.
        return self.terminating

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class Kubelet:
    def __init__(self, stack: Layout, core: client.CoreV1Api) -> None:
        self.stack = stack
        self.core = core
        self.pods: dict[str, PodRuntime] = {}
        network_ = ipaddress.ip_network(f"{stack.bridge_ip}/{stack.pod_prefix_len}", strict=False)
        # Pods start at .1.1: the .0.x block is kept for the host side (bridge, Kafka's pod listener).
        self._free_ips = [str(ip) for ip in network_.hosts() if ip.packed[-2] >= 1]
        self._stopping = asyncio.Event()

    # --- node ---------------------------------------------------------------------------------------
    async def register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.stack.node_name, "labels": {"kubernetes.io/hostname": "devstack"}},
        }
        with contextlib.suppress(ApiException):
            await self.core.create_node(node)
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "1000"}
        status = {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [{"type": "InternalIP", "address": self.stack.bridge_ip}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.stack.kubelet_port}},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "devstack local kubelet is running",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
                "nodeInfo": {
                    "kubeletVersion": self.stack.kube_version,
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "devstack://process",
                    "kernelVersion": os.uname().release,
                    "osImage": "devstack",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        await self.core.patch_node_status(self.stack.node_name, status)

    # --- watch --------------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.register_node()
        _log(f"node {self.stack.node_name} registered")
        resource_version = ""
        while not self._stopping.is_set():
            try:
                if not resource_version:
                    listing = await self.core.list_pod_for_all_namespaces()
                    for pod in listing.items:
                        self.on_pod("ADDED", pod)
                    resource_version = listing.metadata.resource_version
                async with watch.Watch() as pod_watch:
                    async for event in pod_watch.stream(
                        self.core.list_pod_for_all_namespaces,
                        resource_version=resource_version,
                        timeout_seconds=int(os.environ.get("QA_KUBELET_WATCH_SECONDS", "300")),
                        allow_watch_bookmarks=True,
                    ):
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            resource_version = ""
                            break
                        if event["type"] == "BOOKMARK":
                            # Bookmarks come undecoded: a dict carrying only metadata.resourceVersion.
                            meta = obj.get("metadata", {}) if isinstance(obj, dict) else {}
                            resource_version = meta.get("resourceVersion", resource_version)
                            continue
                        resource_version = obj.metadata.resource_version
                        self.on_pod(event["type"], obj)
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = ""
                    continue
                _log(f"watch failed: {exc.status} {exc.reason}; retrying")
                await asyncio.sleep(1)
            except (TimeoutError, aiohttp.ClientError) as exc:
                _log(f"watch connection lost: {exc!r}; retrying")
                await asyncio.sleep(1)
            except Exception as exc:  # the node must outlive any one bad event: log, re-list, go on
                _log(f"watch loop error: {exc!r}; re-listing")
                resource_version = ""
                await asyncio.sleep(1)

    def on_pod(self, kind: str, pod: Any) -> None:
        meta, spec = pod.metadata, pod.spec
        uid = meta.uid
        runtime = self.pods.get(uid)
        if kind == "DELETED":
            if runtime is not None and not runtime.terminating:
                self._spawn_task(runtime, self.terminate(runtime, grace=0, delete=False))
            return
        if not spec.node_name:
            if meta.deletion_timestamp is None:
                self._background(self.bind(meta.namespace, meta.name))
            return
        if spec.node_name != self.stack.node_name:
            return
        if meta.deletion_timestamp is not None:
            grace = meta.deletion_grace_period_seconds
            if runtime is None:
                self._background(self.force_delete(meta.namespace, meta.name, uid))
            elif not runtime.terminating:
                self._spawn_task(runtime, self.terminate(runtime, grace=grace or 0, delete=True))
            return
        if runtime is None and pod.status.phase in (None, "Pending"):
            runtime = self._allocate(pod)
            self._spawn_task(runtime, self.start(runtime, pod))

    def _allocate(self, pod: Any) -> PodRuntime:
        uid = pod.metadata.uid
        short = uid.replace("-", "")[:10]
        runtime = PodRuntime(
            uid=uid,
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            ip=self._free_ips.pop(0),
            netns=f"{network.NETNS_PREFIX}{short}",
            veth=f"{network.VETH_PREFIX}{short}",
            log_path=self.log_path(pod.metadata.namespace, pod.metadata.name),
            container=pod.spec.containers[0].name,
        )
        self.pods[uid] = runtime
        return runtime

    def log_path(self, namespace: str, name: str) -> Path:
        return self.stack.run / "pods" / f"{namespace}_{name}.log"

    def container_log(self, namespace: str, name: str, container: str) -> tuple[Path, bool] | None:
        """The log file of a pod's container, and whether it may still grow (for kubelet_api)."""
        for runtime in list(self.pods.values()):
            if (runtime.namespace, runtime.name) == (namespace, name):
                if container != runtime.container:
                    return None
                return runtime.log_path, not runtime.is_terminating()
        path = self.log_path(namespace, name)
        return (path, False) if path.exists() else None

    def _spawn_task(self, runtime: PodRuntime, coro: Any) -> None:
        runtime.tasks.append(asyncio.create_task(coro))

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def bind(self, namespace: str, name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.stack.node_name},
        }
        try:
            await self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):
                _log(f"binding {namespace}/{name} failed: {exc.status} {exc.reason}")

    async def force_delete(self, namespace: str, name: str, uid: str) -> None:
        with contextlib.suppress(ApiException):
            # The DeleteOptions body wins over query parameters, so the grace period goes in the body.
            await self.core.delete_namespaced_pod(
                name, namespace, body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
            )

    # --- lifecycle ----------------------------------------------------------------------------------
    def _env(self, runtime: PodRuntime, pod: Any, container: Any) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOSTNAME": runtime.name,
        }
        fields = {
            "metadata.name": runtime.name,
            "metadata.namespace": runtime.namespace,
            "metadata.uid": runtime.uid,
            "status.podIP": runtime.ip,
            "status.hostIP": self.stack.bridge_ip,
            "spec.nodeName": self.stack.node_name,
            "spec.serviceAccountName": pod.spec.service_account_name or "default",
        }
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from is not None and var.value_from.field_ref is not None:
                env[var.name] = fields.get(var.value_from.field_ref.field_path, "")
            else:
                env[var.name] = ""
        return env

    async def start(self, runtime: PodRuntime, pod: Any) -> None:
        container = pod.spec.containers[0]
        argv = resolve_command([*(container.command or []), *(container.args or [])])
        try:
            await asyncio.to_thread(
                network.create_pod_namespace,
                netns=runtime.netns,
                veth=runtime.veth,
                bridge=self.stack.bridge,
                address=runtime.ip,
                prefix_len=self.stack.pod_prefix_len,
                gateway=self.stack.bridge_ip,
            )
        except RuntimeError as exc:
            _log(f"{runtime.key}: network set-up failed: {exc}")
            await self._patch_status(runtime, pod, phase="Failed", message=str(exc))
            return
        if not argv:
            await self._patch_status(runtime, pod, phase="Failed", message="container has no command")
            return
        env = self._env(runtime, pod, container)
        runtime.log_path.parent.mkdir(parents=True, exist_ok=True)
        await self._patch_status(runtime, pod, phase="Running")
        probe = container.readiness_probe
        if probe is not None:
            self._spawn_task(runtime, self.probe_loop(runtime, pod, probe, container))
        backoff = 1.0
        while not runtime.terminating:
            runtime.started_at = _now()
            with runtime.log_path.open("ab") as log:
                runtime.process = await asyncio.create_subprocess_exec(
                    "ip",
                    "netns",
                    "exec",
                    runtime.netns,
                    *argv,
                    env=env,
                    cwd=container.working_dir or str(REPO_ROOT),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.record(f"{POD_PROCESS_PREFIX}{runtime.uid}", runtime.process.pid, pid_dir=self.stack.pids)
            _log(f"{runtime.key}: started pid {runtime.process.pid} at {runtime.ip}")
            if ready_when_started(has_probe=probe is not None):
                # Without a readiness probe a container is ready whenever it runs: after every restart too.
                runtime.ready = True
                await self._patch_status(runtime, pod, phase="Running")
            code = await runtime.process.wait()
            if runtime.is_terminating():
                return
            _log(f"{runtime.key}: process exited with {code}")
            if (pod.spec.restart_policy or "Always") == "Never" or (
                pod.spec.restart_policy == "OnFailure" and code == 0
            ):
                runtime.ready = False
                await self._patch_status(runtime, pod, phase="Succeeded" if code == 0 else "Failed")
                return
            runtime.restart_count += 1
            runtime.ready = False
            await self._patch_status(runtime, pod, phase="Running", exit_code=code)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)

    async def probe_loop(self, runtime: PodRuntime, pod: Any, probe: Any, container: Any) -> None:
        period = max(1, probe.period_seconds or 10)
        timeout = max(1, probe.timeout_seconds or 1)
        success_needed = max(1, probe.success_threshold or 1)
        failure_needed = max(1, probe.failure_threshold or 3)
        await asyncio.sleep(probe.initial_delay_seconds or 0)
        successes = failures = 0
        while not runtime.terminating:
            ok = await self._probe_once(runtime, probe, container, timeout)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            alive = runtime.process is not None and runtime.process.returncode is None
            ready = runtime.ready
            if ok and alive and successes >= success_needed:
                ready = True
            elif (not ok and failures >= failure_needed) or not alive:
                ready = False
            if ready != runtime.ready and not runtime.terminating:
                runtime.ready = ready
                _log(f"{runtime.key}: ready={ready}")
                await self._patch_status(runtime, pod, phase="Running")
            await asyncio.sleep(period)

    async def _probe_once(self, runtime: PodRuntime, probe: Any, container: Any, limit: float) -> bool:
        if runtime.process is None or runtime.process.returncode is not None:
            return False
        if probe.http_get is not None:
            port = _resolve_port(probe.http_get.port, container)
            path = probe.http_get.path or "/"
            url = f"http://{runtime.ip}:{port}{path}"
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as session,
                    session.get(url) as response,
                ):
                    return 200 <= response.status < 400
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False
        if probe._exec is not None:
            argv = ["ip", "netns", "exec", runtime.netns, *probe._exec.command]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            try:
                return await asyncio.wait_for(proc.wait(), limit) == 0
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return False
        if probe.tcp_socket is not None:
            port = _resolve_port(probe.tcp_socket.port, container)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(runtime.ip, port), limit)
                writer.close()
                await writer.wait_closed()
                return True
            except (OSError, TimeoutError):
                return False
        return True

    async def terminate(self, runtime: PodRuntime, *, grace: float, delete: bool) -> None:
        runtime.terminating = True
        if runtime.ready:
            runtime.ready = False
        proc = runtime.process
        if proc is not None and proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace if grace > 0 else 5)
            except TimeoutError:
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        procs.forget(f"{POD_PROCESS_PREFIX}{runtime.uid}", pid_dir=self.stack.pids)
        await asyncio.to_thread(network.delete_pod_namespace, netns=runtime.netns, veth=runtime.veth)
        self._free_ips.append(runtime.ip)
        self.pods.pop(runtime.uid, None)
        _log(f"{runtime.key}: stopped")
        if delete:
            await self.force_delete(runtime.namespace, runtime.name, runtime.uid)
        for task in runtime.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _patch_status(
        self,
        runtime: PodRuntime,
        pod: Any,
        *,
        phase: str,
        message: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        async with runtime.status_lock:
            await self._send_status(runtime, pod, phase=phase, message=message, exit_code=exit_code)

    async def _send_status(
        self, runtime: PodRuntime, pod: Any, *, phase: str, message: str | None, exit_code: int | None
    ) -> None:
        ready = "True" if runtime.ready else "False"
        container = pod.spec.containers[0]
        state: dict[str, Any]
        if exit_code is not None:
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"exited with {exit_code}"}}
        elif phase == "Running":
            state = {"running": {"startedAt": runtime.started_at}}
        else:
            state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "reason": phase}}
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": self.stack.bridge_ip,
            "hostIPs": [{"ip": self.stack.bridge_ip}],
            "podIP": runtime.ip,
            "podIPs": [{"ip": runtime.ip}],
            "startTime": runtime.started_at,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": _now()},
                {"type": "Ready", "status": ready, "lastTransitionTime": _now()},
            ],
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image or "devstack/process",
                    "imageID": "",
                    "ready": runtime.ready,
                    "started": phase == "Running",
                    "restartCount": runtime.restart_count,
                    "state": state,
                }
            ],
        }
        if message:
            status["message"] = message
        try:
            await self.core.patch_namespaced_pod_status(runtime.name, runtime.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                _log(f"{runtime.key}: status update failed: {exc.status} {exc.reason}")

    async def shutdown(self) -> None:
        """Stops every pod process quickly; the API objects are left for the next start to clean."""
        self._stopping.set()
        await asyncio.gather(
            *(self.terminate(rt, grace=2, delete=False) for rt in list(self.pods.values())),
            return_exceptions=True,
        )


def ready_when_started(*, has_probe: bool) -> bool:
    """A container without a readiness probe is ready as soon as its process runs (every time it is
    started); one with a probe only when the probe passes."""
    return not has_probe


def resolve_command(argv: list[str]) -> list[str]:
    """``python ...`` runs this project's interpreter, the one the project's image has as ``python``."""
    if argv and argv[0] in PYTHON_COMMANDS:
        return [sys.executable, *argv[1:]]
    return argv


def _resolve_port(port: int | str, container: Any) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.ports or []:
        if declared.name == port:
            return int(declared.container_port)
    raise ValueError(f"named port {port!r} not declared by container {container.name}")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


async def _clean_previous_pods(kubelet: Kubelet) -> None:
    """A restarted kubelet runs nothing yet: the pods still bound to its node are deleted and recreated."""
    listing = await kubelet.core.list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={kubelet.stack.node_name}"
    )
    for pod in listing.items:
        await kubelet.force_delete(pod.metadata.namespace, pod.metadata.name, pod.metadata.uid)


async def main() -> None:
    stack = layout()
    await config.load_kube_config(config_file=str(stack.kubeconfig))
    async with client.ApiClient() as api:
        kubelet = Kubelet(stack, client.CoreV1Api(api))
        loop = asyncio.get_running_loop()
        runner = asyncio.current_task()
        assert runner is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.cancel)
        certs = await asyncio.to_thread(pki.kubelet_certs, stack)
        server = await kubelet_api.serve(
            kubelet.container_log, host=stack.bridge_ip, port=stack.kubelet_port, certs=certs
        )
        _log(f"kubelet API listening on https://{stack.bridge_ip}:{stack.kubelet_port}")
        try:
            await _clean_previous_pods(kubelet)
            await kubelet.run()
        except asyncio.CancelledError:
            _log("stopping")
        finally:
            await kubelet.shutdown()
            await server.cleanup()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
