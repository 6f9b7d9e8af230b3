"""A single-node KRaft Kafka broker from the cached jars; a fresh cluster id and data dir at every start."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from devstack import certs, procs
from devstack.config import KAFKA_USERS, Layout

NAME = "kafka"

_LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def server_properties(layout: Layout, data_dir: Path, tls: certs.Certificates) -> str:
    host, pod, ctl = layout.kafka_port, layout.kafka_pod_port, layout.kafka_controller_port
    sasl_ssl, mtls = layout.kafka_sasl_ssl_port, layout.kafka_ssl_port
    bridge = layout.bridge_ip
    plain_users = " ".join(f'user_{u.name}="{u.password}"' for u in KAFKA_USERS if u.mechanism == "PLAIN")
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{ctl}",
            f"listeners=PLAINTEXT://127.0.0.1:{host},POD://{bridge}:{pod},CONTROLLER://127.0.0.1:{ctl},"
            f"SASL_SSL://127.0.0.1:{sasl_ssl},SSL://127.0.0.1:{mtls}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{host},POD://{bridge}:{pod},"
            f"SASL_SSL://127.0.0.1:{sasl_ssl},SSL://127.0.0.1:{mtls}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,POD:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SASL_SSL:SASL_SSL,SSL:SSL",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            # The secured listeners: the devstack CA's server certificate; SSL requires a client certificate.
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={tls.server_keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls.ca}",
            "listener.name.ssl.ssl.client.auth=required",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN,OAUTHBEARER",
            # OAUTHBEARER with Kafka's own unsecured-token validator: tokens unsigned ("alg": "none") with
            # ``sub`` and ``exp`` claims, for testing only (a real cluster validates JWTs against a JWKS).
            "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config="
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            'unsecuredLoginStringClaim_sub="devstack-broker";',
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.check.interval.ms=5000",
            "",
        ]
    )


def client_properties(layout: Layout, tls: certs.Certificates) -> dict[str, str]:
    """Java client settings per secured listener (``kafka-consumer-groups --listener NAME``)."""
    trust = f"ssl.truststore.type=PEM\nssl.truststore.location={tls.ca}\n"
    found = {
        "ssl": trust
        + f"security.protocol=SSL\nssl.keystore.type=PEM\nssl.keystore.location={tls.client_keystore}\n"
    }
    for user in KAFKA_USERS:
        module = "scram.ScramLoginModule" if user.mechanism.startswith("SCRAM") else "plain.PlainLoginModule"
        found[f"sasl-ssl-{user.mechanism.split('-')[0].lower()}"] = (
            trust
            + f"security.protocol=SASL_SSL\nsasl.mechanism={user.mechanism}\n"
            + f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
            + f'username="{user.name}" password="{user.password}";\n'
        )
    return found


def _java(layout: Layout, main: str, *args: str, tmp: Path, log_config: Path) -> list[str]:
    return [
        "java",
        "-Xmx512m",
        "-Xms128m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        f"-Djava.io.tmpdir={tmp}",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        f"{layout.kafka_libs}/*",
        main,
        *args,
    ]


def start(layout: Layout) -> procs.Recorded:
    home = layout.run / "kafka"
    if home.exists():
        shutil.rmtree(home)
    data, tmp = home / "data", home / "tmp"
    data.mkdir(parents=True)
    tmp.mkdir()
    log = layout.logs / "kafka.log"
    log_config = home / "log4j2.properties"
    log_config.write_text(_LOG4J.format(log=log))
    tls = certs.ensure(layout)
    props = home / "server.properties"
    props.write_text(server_properties(layout, data, tls))
    clients = home / "clients"
    clients.mkdir()
    for listener, text in client_properties(layout, tls).items():
        (clients / f"{listener}.properties").write_text(text)
    scram = [
        f"{u.mechanism}=[name={u.name},password={u.password}]"
        for u in KAFKA_USERS
        if u.mechanism.startswith("SCRAM")
    ]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        _java(
            layout,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(props),
            *(arg for user in scram for arg in ("--add-scram", user)),
            tmp=tmp,
            log_config=log_config,
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise RuntimeError(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
    return procs.spawn(
        NAME,
        _java(layout, "kafka.Kafka", str(props), tmp=tmp, log_config=log_config),
        pid_dir=layout.pids,
        log_file=layout.logs / "kafka.out",
    )


def stop(layout: Layout) -> None:
    """Stops the broker but keeps its data, so ``resume`` brings back the same topics and groups."""
    entry = procs.running(NAME, pid_dir=layout.pids)
    if entry is not None:
        procs.stop(entry, pid_dir=layout.pids, grace=20)


def resumable(layout: Layout) -> bool:
    """Whether a previous start left data here under the configuration a start would write now."""
    home = layout.run / "kafka"
    props = home / "server.properties"
    if not props.exists() or not (home / "data").is_dir():
        return False
    return props.read_text() == server_properties(layout, home / "data", certs.ensure(layout))


def resume(layout: Layout) -> procs.Recorded:
    """Starts the broker again on the data and configuration of the previous start."""
    home = layout.run / "kafka"
    props, log_config = home / "server.properties", home / "log4j2.properties"
    if not props.exists():
        raise RuntimeError("kafka was never started here: nothing to resume")
    running = procs.running(NAME, pid_dir=layout.pids)
    if running is not None:
        return running
    return procs.spawn(
        NAME,
        _java(layout, "kafka.Kafka", str(props), tmp=home / "tmp", log_config=log_config),
        pid_dir=layout.pids,
        log_file=layout.logs / "kafka.out",
    )


def ready(layout: Layout) -> bool:
    """True once the broker answers on every listener (a metadata round trip is done by the caller)."""
    for port, host in (
        (layout.kafka_port, "127.0.0.1"),
        (layout.kafka_pod_port, layout.bridge_ip),
        (layout.kafka_sasl_ssl_port, "127.0.0.1"),
        (layout.kafka_ssl_port, "127.0.0.1"),
    ):
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return False
    return True


def wait_ready(layout: Layout, *, timeout: float) -> None:
    from devstack import kafka_probe  # aiokafka is only needed once the broker is up

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = procs.running(NAME, pid_dir=layout.pids)
        if entry is None:
            raise RuntimeError(
                "kafka exited during start-up; last log lines:\n"
                + procs.log_tail(layout.logs / "kafka.out")
                + "\n"
                + procs.log_tail(layout.logs / "kafka.log")
            )
        if ready(layout) and kafka_probe.answers(layout.kafka_bootstrap):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"kafka not ready after {timeout:.0f}s; last log lines:\n" + procs.log_tail(layout.logs / "kafka.log")
    )
