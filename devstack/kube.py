"""etcd, kube-apiserver and kube-controller-manager from the build cache, and an admin kubeconfig."""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from devstack import pki as devstack_pki
from devstack import procs
from devstack.config import Layout

CONTROLLERS = ",".join(
    [
        "deployment-controller",
        "replicaset-controller",
        "endpointslice-controller",
        "endpointslice-mirroring-controller",
        "garbage-collector-controller",
        "namespace-controller",
        "serviceaccount-controller",
    ]
)


def _prepare_pki(layout: Layout) -> Path:
    pki = layout.run / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    key = pki / "sa.key"
    if not key.exists():
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True, text=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pki / "sa.pub")],
            check=True,
            capture_output=True,
            text=True,
        )
    token_file = pki / "tokens.csv"
    if not token_file.exists():
        token = secrets.token_hex(24)
        token_file.write_text(f'{token},admin,admin,"system:masters"\n')
    return pki


def admin_token(layout: Layout) -> str:
    return (layout.run / "pki" / "tokens.csv").read_text().split(",", 1)[0]


def write_kubeconfig(layout: Layout) -> Path:
    layout.kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: devstack
  cluster:
    server: {layout.apiserver_url}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {admin_token(layout)}
contexts:
- name: devstack
  context:
    cluster: devstack
    user: admin
current-context: devstack
"""
    )
    return layout.kubeconfig


def start_etcd(layout: Layout) -> procs.Recorded:
    data = layout.run / "etcd"
    if data.exists():
        shutil.rmtree(data)
    client = f"http://127.0.0.1:{layout.etcd_port}"
    peer = f"http://127.0.0.1:{layout.etcd_peer_port}"
    return procs.spawn(
        "etcd",
        [
            str(layout.etcd_bin),
            "--name=devstack",
            f"--data-dir={data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devstack={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        pid_dir=layout.pids,
        log_file=layout.logs / "etcd.log",
    )


def start_apiserver(layout: Layout) -> procs.Recorded:
    pki = _prepare_pki(layout)
    kubelet = devstack_pki.kubelet_certs(layout)
    return procs.spawn(
        "kube-apiserver",
        [
            str(layout.kube_bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{layout.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={layout.apiserver_port}",
            f"--cert-dir={pki / 'serving'}",
            f"--service-cluster-ip-range={layout.service_cidr}",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer={layout.apiserver_url}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--endpoint-reconciler-type=none",
            # `kubectl logs`: the apiserver calls the local kubelet's API with this client certificate and
            # checks the kubelet's serving certificate against the devstack's kubelet CA.
            f"--kubelet-client-certificate={kubelet.client_cert}",
            f"--kubelet-client-key={kubelet.client_key}",
            f"--kubelet-certificate-authority={kubelet.ca}",
            "--kubelet-preferred-address-types=InternalIP",
            "--v=1",
        ],
        pid_dir=layout.pids,
        log_file=layout.logs / "kube-apiserver.log",
    )


def start_controller_manager(layout: Layout) -> procs.Recorded:
    pki = layout.run / "pki"
    kubeconfig = str(layout.kubeconfig)
    return procs.spawn(
        "kube-controller-manager",
        [
            str(layout.kube_bin / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            f"--controllers={CONTROLLERS}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-service-endpoint-syncs=10",
            "--endpointslice-updates-batch-period=0s",
            "--v=1",
        ],
        pid_dir=layout.pids,
        log_file=layout.logs / "kube-controller-manager.log",
    )


def _get(url: str, token: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2, context=ctx) as response:
            return int(response.status)
    except Exception:
        return 0


def wait(name: str, layout: Layout, check: str, *, timeout: float) -> None:
    """Waits until ``check`` ('etcd' or an API path) answers; raises with the component's log tail."""
    deadline = time.monotonic() + timeout
    log = layout.logs / f"{name}.log"
    while time.monotonic() < deadline:
        if procs.running(name, pid_dir=layout.pids) is None:
            raise RuntimeError(f"{name} exited during start-up; last log lines:\n{procs.log_tail(log)}")
        if check == "etcd":
            ok = _get(f"http://127.0.0.1:{layout.etcd_port}/health", "") == 200
        else:
            ok = _get(f"{layout.apiserver_url}{check}", admin_token(layout)) == 200
        if ok:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout:.0f}s; last log lines:\n{procs.log_tail(log)}")
