"""Where the devstack keeps its builds, state and ports. Every value can be overridden by environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVSTACK_DIR = Path(__file__).resolve().parent


def _read_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in (DEVSTACK_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key] = value
    return versions


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths, versions and ports of one devstack on this machine."""

    cache: Path
    run: Path
    kube_version: str
    etcd_version: str
    kafka_version: str
    etcd_port: int = 23790
    etcd_peer_port: int = 23800
    apiserver_port: int = 16443
    kafka_port: int = 19092
    kafka_pod_port: int = 19093
    kafka_controller_port: int = 19094
    rabbitmq_port: int = 19672
    rabbitmq_management_port: int = 19673
    rabbitmq_dist_port: int = 19674
    rabbitmq_epmd_port: int = 19675
    redis_port: int = 19379
    redis_tls_port: int = 19380  # TLS (server certificate from certs.ensure; client certificates optional)
    nats_port: int = 19422
    nats_monitor_port: int = 19822
    kafka_sasl_ssl_port: int = 19095  # SASL_SSL: SCRAM-SHA-512 and PLAIN users (KAFKA_USERS)
    kafka_ssl_port: int = 19096  # SSL with a client certificate required (mTLS)
    kubelet_port: int = 10250
    bridge: str = "qa-br0"
    bridge_ip: str = "10.213.0.1"
    pod_prefix_len: int = 16
    node_name: str = "devstack"
    service_cidr: str = "10.96.0.0/16"

    @property
    def kube_bin(self) -> Path:
        return self.cache / f"kube-{self.kube_version}" / "bin"

    @property
    def etcd_bin(self) -> Path:
        return self.cache / f"etcd-{self.etcd_version}" / "bin" / "etcd"

    @property
    def kafka_libs(self) -> Path:
        return self.cache / f"kafka-{self.kafka_version}" / "libs"

    @property
    def tools_bin(self) -> Path:
        """Command-line tools built by devstack/build-tools (not part of the running stack)."""
        return self.cache / "tools" / "bin"

    @property
    def kustomize(self) -> Path:
        return self.tools_bin / "kustomize"

    @property
    def pids(self) -> Path:
        return self.run / "pids"

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.run / "kubeconfig"

    @property
    def kafka_bootstrap(self) -> str:
        """The broker address for processes on the host."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def kafka_pod_bootstrap(self) -> str:
        """The broker address for pods (inside their network namespaces)."""
        return f"{self.bridge_ip}:{self.kafka_pod_port}"

    @property
    def rabbitmq_management_url(self) -> str:
        """RabbitMQ's management HTTP API, for the controller and the tests on the host."""
        return f"http://127.0.0.1:{self.rabbitmq_management_port}"

    @property
    def rabbitmq_amqp_url(self) -> str:
        """AMQP for processes on the host (the pods' address is ``rabbitmq_pod_amqp_url``)."""
        return f"amqp://127.0.0.1:{self.rabbitmq_port}/"

    @property
    def rabbitmq_pod_amqp_url(self) -> str:
        return f"amqp://{self.bridge_ip}:{self.rabbitmq_port}/"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_pod_url(self) -> str:
        return f"redis://{self.bridge_ip}:{self.redis_port}/0"

    @property
    def redis_tls_url(self) -> str:
        """The same server over TLS, for processes on the host; verified against ``certs.ensure``'s CA."""
        return f"rediss://127.0.0.1:{self.redis_tls_port}/0"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def nats_pod_url(self) -> str:
        return f"nats://{self.bridge_ip}:{self.nats_port}"

    @property
    def nats_monitoring_url(self) -> str:
        return f"http://127.0.0.1:{self.nats_monitor_port}"

    @property
    def kafka_sasl_ssl_bootstrap(self) -> str:
        """The SASL_SSL listener (SCRAM-SHA-512 and PLAIN; server certificate from ``certs.ensure``)."""
        return f"127.0.0.1:{self.kafka_sasl_ssl_port}"

    @property
    def kafka_ssl_bootstrap(self) -> str:
        """The SSL listener that requires a client certificate signed by the devstack CA."""
        return f"127.0.0.1:{self.kafka_ssl_port}"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"


@dataclass(frozen=True, slots=True)
class KafkaUser:
    mechanism: str  # SCRAM-SHA-512 or PLAIN
    name: str
    password: str


# The users of the SASL_SSL listener (devstack-only secrets; tests write them into password files).
KAFKA_USERS = (
    KafkaUser("SCRAM-SHA-512", "autoscaler-scram", "scram-devstack-secret"),
    KafkaUser("PLAIN", "autoscaler-plain", "plain-devstack-secret"),
)


def layout() -> Layout:
    versions = _read_versions()
    cache = Path(os.environ.get("QA_CACHE", Path.home() / ".cache" / "queue-autoscaler"))
    run = Path(os.environ.get("QA_DEVSTACK_DIR", "/tmp/queue-autoscaler-devstack"))
    return Layout(
        cache=cache,
        run=run,
        kube_version=versions["KUBE_VERSION"],
        etcd_version=versions["ETCD_VERSION"],
        kafka_version=versions["KAFKA_VERSION"],
    )
