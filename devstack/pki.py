"""The devstack's certificates for the kubelet API: a CA, the kubelet's serving certificate (for the Node's
address) and the client certificate the kube-apiserver presents to the kubelet (``kubectl logs``).

Made with ``openssl`` once per run directory; idempotent, so the apiserver's start and the kubelet's start can
both ask for them.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack.config import Layout

# The user the kubelet accepts on its API; the apiserver is configured to present this client certificate.
APISERVER_CLIENT_NAME = "kube-apiserver-kubelet-client"


@dataclass(frozen=True, slots=True)
class KubeletCerts:
    ca: Path
    serving_cert: Path
    serving_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _signed(directory: Path, name: str, subject: str, extensions: str, ca: Path, ca_key: Path) -> None:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject)
    with tempfile.NamedTemporaryFile("w", suffix=".ext", dir=directory) as ext:
        ext.write(extensions + "\n")
        ext.flush()
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "3650", "-extfile", ext.name,
        )  # fmt: skip
    csr.unlink()
    key.chmod(0o600)


def kubelet_certs(layout: Layout) -> KubeletCerts:
    """The kubelet API's certificates under ``<run>/pki/kubelet``, made when missing."""
    directory = layout.run / "pki" / "kubelet"
    directory.mkdir(parents=True, exist_ok=True)
    certs = KubeletCerts(
        ca=directory / "ca.crt",
        serving_cert=directory / "serving.crt",
        serving_key=directory / "serving.key",
        client_cert=directory / "apiserver-client.crt",
        client_key=directory / "apiserver-client.key",
    )
    ca_key = directory / "ca.key"
    if not certs.ca.exists():
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(certs.ca),
            "-days", "3650", "-subj", "/CN=devstack-kubelet-ca",
        )  # fmt: skip
        ca_key.chmod(0o600)
    if not certs.serving_cert.exists():
        _signed(
            directory,
            "serving",
            f"/CN={layout.node_name}",
            f"subjectAltName=IP:{layout.bridge_ip},DNS:{layout.node_name}\nextendedKeyUsage=serverAuth",
            certs.ca,
            ca_key,
        )
    if not certs.client_cert.exists():
        _signed(
            directory,
            "apiserver-client",
            f"/O=system:masters/CN={APISERVER_CLIENT_NAME}",
            "extendedKeyUsage=clientAuth",
            certs.ca,
            ca_key,
        )
    return certs
