"""Kafka requests per controller tick for 1 to 1,000 consumer groups, counted three ways.

One tick of the controller is one ``OffsetReader.read`` of every target's group. This benchmark builds
``--topics`` topics of ``--partitions`` partitions, commits offsets for ``max(--groups)`` consumer groups
(group i on topic i mod ``--topics``), then for each group count: a fresh reader, one warm-up read (the cold
start: bootstrap, FindCoordinator, Metadata) and ``--reads`` measured reads.

Requests are counted by:

* our counter: ``OffsetReader.requests_by_api``, which also feeds
  ``queue_autoscaler_kafka_requests_total{api}`` (read back from the registry to check they agree);
* a TCP proxy the reader bootstraps through, which parses each request header (int32 size, int16 api_key,
  int16 api_version, int32 correlation id, client id) on its way to the broker. The broker advertises its
  own address in Metadata, so after bootstrap the reader talks to the broker directly: the proxy only sees
  the bootstrap connection, and the table says so;
* a packet capture on the loopback interface (an AF_PACKET socket with a BPF filter on the broker's port,
  root only) that reassembles every TCP stream to the broker and parses the same request headers, keeping
  only requests whose client id is this run's (other clients share the broker). It sees everything the
  broker receives from the reader, through the proxy or not.

The "KEDA" column is a model, not a measurement: KEDA's Kafka scaler, per its design, sends at least one
OffsetFetch and one ListOffsets per ScaledObject per evaluation (plus metadata), i.e. >= 2 requests per group.

    python -m bench.kafka_requests [--bootstrap 127.0.0.1:19092] [--groups 1,10,100,1000] [--reads 20]

With ``--connections FILE --connection NAME`` the reader reads over that named connection (e.g. SASL_SSL
on the devstack broker) while the set-up still uses ``--bootstrap``; the traffic is encrypted, so the proxy
and the packet capture cannot parse it and only our counter and the metric count (results in
``kafka_requests_<name>.json/.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from autoscaler import connections
from autoscaler.observability import logging as obs_logging
from autoscaler.sources.kafka import offsets

RESULTS = Path(__file__).resolve().parent / "results"
API_NAMES = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    18: "ApiVersions",
    32: "DescribeConfigs",
    42: "DeleteGroups",
}
OUR_APIS = ("Metadata", "FindCoordinator", "OffsetFetch", "ListOffsets")
KEDA_MODEL = (
    "KEDA (Kafka scaler, per its design: ≥2 requests per ScaledObject per evaluation — OffsetFetch + "
    "ListOffsets, plus metadata) — a model, not measured"
)


def api_name(key: int) -> str:
    return API_NAMES.get(key, f"api{key}")


@dataclass
class RequestParser:
    """Splits one client→broker byte stream into Kafka requests and counts them by (client id, API)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _buffer: bytearray = field(default_factory=bytearray)
    _skip: int = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            self._buffer += view
            view = memoryview(b"")
            while len(self._buffer) >= 4:
                size = struct.unpack_from(">i", self._buffer)[0]
                header_len = min(size, 4 + 4 + 2 + 512)
                if len(self._buffer) < 4 + header_len:
                    break
                self._count(bytes(self._buffer[4 : 4 + header_len]))
                remaining = 4 + size - len(self._buffer)
                if remaining > 0:
                    self._skip = remaining
                    self._buffer.clear()
                    break
                del self._buffer[: 4 + size]

    def _count(self, header: bytes) -> None:
        api_key, _version, _correlation, id_len = struct.unpack_from(">hhih", header)
        client_id = "" if id_len < 0 else header[10 : 10 + id_len].decode(errors="replace")
        self.counts[(client_id, api_name(api_key))] += 1


class CountingProxy:
    """A TCP proxy in front of the broker that counts the requests passing through it."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self.counts: Counter[tuple[str, str]] = Counter()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        parser = RequestParser()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, parse: bool) -> None:
            try:
                while data := await src.read(65536):
                    if parse:
                        parser.feed(data)
                        self.counts.update(parser.counts)
                        parser.counts.clear()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        tasks = [
            asyncio.create_task(pipe(reader, up_writer, True), name="proxy up"),
            asyncio.create_task(pipe(up_reader, writer, False), name="proxy down"),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)


# --- packet capture ---------------------------------------------------------------------------------------

_ETH_P_ALL = 0x0003
_SO_ATTACH_FILTER = 26
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_PACKET_OUTGOING = 4


def _bpf_tcp_dst_port(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: accept IPv4 TCP segments (not fragments) to ``port`` on an Ethernet-framed interface."""
    return [
        (0x28, 0, 0, 12),  # ldh [12]            ethertype
        (0x15, 0, 8, 0x0800),  # jeq IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]            IP protocol
        (0x15, 0, 6, 6),  # jeq TCP, else drop
        (0x28, 0, 0, 20),  # ldh [20]            flags + fragment offset
        (0x45, 4, 0, 0x1FFF),  # jset fragment -> drop
        (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)   IP header length
        (0x48, 0, 0, 16),  # ldh [x+16]          TCP destination port
        (0x15, 0, 1, port),  # jeq port -> accept, else drop
        (0x06, 0, 0, 262144),  # accept
        (0x06, 0, 0, 0),  # drop
    ]


class LoopbackCapture:
    """Reassembles TCP streams to the broker's port on ``lo`` and counts Kafka requests by client id.

    Only connections opened after ``start`` are parsed (their stream begins on a request boundary); a
    stream with a gap (a dropped packet) is given up and reported in ``broken_streams``.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: Counter[tuple[str, str]] = Counter()
        self.broken_streams = 0
        self.streams = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._flows: dict[tuple[int, int], tuple[int, RequestParser]] = {}
        self.filtered_in_kernel = False

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024 * 1024)
        program = _bpf_tcp_dst_port(self.port)
        filters = (ctypes.c_ubyte * (8 * len(program)))()
        for i, (code, jt, jf, k) in enumerate(program):
            struct.pack_into("HBBI", filters, 8 * i, code, jt, jf, k)
        fprog = struct.pack("HL", len(program), ctypes.addressof(filters))
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
            self.filtered_in_kernel = True
        except OSError:
            self.filtered_in_kernel = False  # filtered below instead
        sock.bind(("lo", 0))
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="loopback capture", daemon=True)
        self._thread.start()

    def stop(self) -> tuple[int, int]:
        """Stops capturing; returns the kernel's (packets, drops) for the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        stats = (0, 0)
        if self._sock is not None:
            raw = self._sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
            stats = struct.unpack("II", raw)
            self._sock.close()
        return stats

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self.counts)

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                packet, address = self._sock.recvfrom(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == _PACKET_OUTGOING:
                continue  # every loopback packet is seen twice: keep the incoming copy
            self._segment(packet)

    def _segment(self, packet: bytes) -> None:
        if len(packet) < 34 or packet[12:14] != b"\x08\x00" or packet[23] != 6:
            return
        ihl = (packet[14] & 0x0F) * 4
        total = struct.unpack_from(">H", packet, 16)[0]
        tcp = 14 + ihl
        src_port, dst_port, seq = struct.unpack_from(">HHI", packet, tcp)
        if dst_port != self.port:
            return
        offset = (packet[tcp + 12] >> 4) * 4
        flags = packet[tcp + 13]
        payload = packet[tcp + offset : 14 + total]
        key = (src_port, dst_port)
        if flags & 0x02:  # SYN: a new stream, data starts at seq + 1
            self._flows[key] = ((seq + 1) & 0xFFFFFFFF, RequestParser())
            self.streams += 1
            return
        flow = self._flows.get(key)
        if flow is None or not payload:
            if flags & 0x05 and flow is not None:  # FIN or RST
                del self._flows[key]
            return
        expected, parser = flow
        ahead = (seq - expected) & 0xFFFFFFFF
        if ahead == 0:
            parser.feed(payload)
            self._flows[key] = ((expected + len(payload)) & 0xFFFFFFFF, parser)
        elif ahead > 0x7FFFFFFF:  # a retransmission of bytes already seen (maybe partly new)
            behind = 0x100000000 - ahead
            if behind < len(payload):
                parser.feed(payload[behind:])
                self._flows[key] = ((expected + len(payload) - behind) & 0xFFFFFFFF, parser)
        else:
            self.broken_streams += 1
            del self._flows[key]
            return
        if parser.counts:
            with self._lock:
                self.counts.update(parser.counts)
            parser.counts.clear()


# --- the cluster set-up ----------------------------------------------------------------------------------


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    """Deletes the topics; the broker then drops the groups' offsets on them as well."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(topics))
    finally:
        await admin.close()


async def fill(bootstrap: str, topics: Sequence[str], partitions: int, per_partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, b"x", partition=p)
            for topic in topics
            for p in range(partitions)
            for _ in range(per_partition)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def commit_groups(
    bootstrap: str, groups: Sequence[str], topics: Sequence[str], partitions: int, *, parallel: int = 32
) -> None:
    """Group i commits an offset on every partition of topic i mod len(topics), as a standalone consumer."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int, group: str) -> None:
        topic = topics[i % len(topics)]
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        async with gate:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
            await consumer.start()
            try:
                consumer.assign(tps)
                await consumer.commit({tp: 1 + (i + tp.partition) % 50 for tp in tps})
            finally:
                await consumer.stop()

    await asyncio.gather(*(one(i, g) for i, g in enumerate(groups)))


# --- measuring -------------------------------------------------------------------------------------------


@dataclass
class Row:
    groups: int
    topics: int
    partitions: int
    reads: int
    ours_per_read: dict[str, float]
    metric_per_read: dict[str, float]
    capture_per_read: dict[str, float]
    proxy_per_read: dict[str, float]
    warmup_ours: dict[str, int]
    warmup_capture: dict[str, int]
    warmup_proxy: dict[str, int]
    reader_connections: int
    read_ms_p50: float
    read_ms_max: float
    keda_model: int

    @property
    def ours_total(self) -> float:
        return sum(self.ours_per_read.values())

    @property
    def capture_total(self) -> float:
        return sum(v for k, v in self.capture_per_read.items() if k != "ApiVersions")


def _mine(counts: Counter[tuple[str, str]], client_id: str) -> Counter[str]:
    return Counter({api: n for (cid, api), n in counts.items() if cid == client_id})


def _per_read(after: Counter[str], before: Counter[str], reads: int) -> dict[str, float]:
    return {
        api: round((after[api] - before[api]) / reads, 3) for api in sorted(after) if after[api] - before[api]
    }


async def measure(
    *,
    proxy: CountingProxy,
    proxy_address: str | connections.KafkaConnection,
    capture: LoopbackCapture | None,
    queries: Sequence[offsets.GroupQuery],
    reads: int,
    settle: float,
) -> Row:
    client_id = f"bench-{uuid.uuid4().hex[:10]}"
    registry = CollectorRegistry()
    settings = offsets.ReaderSettings(client_id=client_id)
    reader = offsets.OffsetReader(proxy_address, settings=settings, registry=registry)

    def metric() -> Counter[str]:
        return Counter(
            {
                api: int(
                    registry.get_sample_value("queue_autoscaler_kafka_requests_total", {"api": api}) or 0
                )
                for api in OUR_APIS
            }
        )

    def captured() -> Counter[str]:
        return _mine(capture.snapshot(), client_id) if capture is not None else Counter()

    async with reader:
        warm = await reader.read(queries=queries)
        failed = [q.group for q, r in warm.items() if isinstance(r, Exception)]
        if failed:
            raise SystemExit(f"warm-up read failed for {len(failed)} groups, e.g. {failed[0]}: {warm}")
        await asyncio.sleep(settle)
        ours0, metric0, cap0, proxy0 = (
            Counter(reader.requests_by_api),
            metric(),
            captured(),
            _mine(proxy.counts, client_id),
        )
        durations = []
        for _ in range(reads):
            started = time.perf_counter()
            result = await reader.read(queries=queries)
            durations.append((time.perf_counter() - started) * 1000)
            assert all(not isinstance(r, Exception) for r in result.values()), result
        await asyncio.sleep(settle)
        ours1, metric1, cap1, proxy1 = (
            Counter(reader.requests_by_api),
            metric(),
            captured(),
            _mine(proxy.counts, client_id),
        )
        connections = len(getattr(reader._link.client, "_conns", {}))
        partitions = len({(p.topic, p.partition) for r in result.values() if isinstance(r, tuple) for p in r})
    return Row(
        groups=len(queries),
        topics=len({t for q in queries for t in q.topics or ()}),
        partitions=partitions,
        reads=reads,
        ours_per_read=_per_read(ours1, ours0, reads),
        metric_per_read=_per_read(metric1, metric0, reads),
        capture_per_read=_per_read(cap1, cap0, reads),
        proxy_per_read=_per_read(proxy1, proxy0, reads),
        warmup_ours=dict(sorted(ours0.items())),
        warmup_capture=dict(sorted(cap0.items())),
        warmup_proxy=dict(sorted(proxy0.items())),
        reader_connections=connections,
        read_ms_p50=round(statistics.median(durations), 2),
        read_ms_max=round(max(durations), 2),
        keda_model=2 * len(queries),
    )


def _fmt(counts: dict[str, float] | dict[str, int]) -> str:
    return ", ".join(f"{api} {n:g}" for api, n in counts.items()) or "—"


def markdown(report: dict[str, Any], rows: Sequence[Row]) -> str:
    capture = report["capture"]
    lines = [
        "# Kafka requests per controller tick",
        "",
        f"Measured {report['measured_at']} against Kafka at `{report['bootstrap']}` "
        f"over {report['security_protocol']}"
        + (f" ({report['sasl_mechanism']})" if report.get("sasl_mechanism") else "")
        + " "
        f"({report['topics']} topics × {report['partitions_per_topic']} partitions; group i has committed "
        f"offsets on topic i mod {report['topics']}). Command: `{report['command']}`.",
        "",
        "One tick = one `OffsetReader.read` of every group (the controller's batched read). After one",
        f"warm-up read, {report['reads']} reads were measured; figures are requests per read.",
        "",
        f"| groups | topics | partitions | ours: requests per tick (by API) | packet capture (by API) | "
        f"{KEDA_MODEL} | read p50 ms |",
        "|---:|---:|---:|---|---|---:|---:|",
    ]
    for row in rows:
        ours = f"{row.ours_total:g} ({_fmt(row.ours_per_read)})"
        captured = (
            f"{row.capture_total:g} ({_fmt(row.capture_per_read)})" if capture["enabled"] else "not counted"
        )
        lines.append(
            f"| {row.groups:,} | {row.topics} | {row.partitions} | {ours} | {captured} "
            f"| {row.keda_model:,} | {row.read_ms_p50} |"
        )
    lines += [
        "",
        "Cold start (the warm-up read, once per reader):",
        "",
        "| groups | ours | packet capture | proxy |",
        "|---:|---|---|---|",
    ]
    for row in rows:
        cold = (_fmt(row.warmup_ours), _fmt(row.warmup_capture), _fmt(row.warmup_proxy))
        lines.append(f"| {row.groups:,} | {' | '.join(cold)} |")
    lines += [
        "",
        "## How the requests were counted",
        "",
        "* **ours**: `OffsetReader.requests_by_api`; `queue_autoscaler_kafka_requests_total{api}` on the "
        f"same registry agreed on every row: {report['metric_agrees']}.",
        "* **packet capture**: "
        + (
            f"an AF_PACKET socket on `lo` (BPF filter `tcp dst port {capture['port']}`"
            f"{' in the kernel' if capture['filtered_in_kernel'] else ''}) reassembling every TCP stream to "
            "the broker and parsing each request header (size, api_key, api_version, correlation id, "
            "client id), keeping only this run's client id. It counts what the broker received, "
            "whichever way it came. "
            f"Kernel counters: {capture['packets']} packets, {capture['drops']} dropped; "
            f"{capture['broken_streams']} streams given up on a gap. "
            "ApiVersions is the connection handshake, which our counter leaves out by design. "
            f"Capture equals ours (ApiVersions aside) on every row: {report['capture_agrees']}."
            if capture["enabled"]
            else f"not run: {capture['reason']}."
        ),
        "* **proxy**: the reader bootstrapped through a TCP proxy that parses the same headers. The broker "
        f"advertises `{report['bootstrap']}` in its Metadata answer, so aiokafka opens its node connections "
        f"to the broker itself. Over all rows the proxy saw {_fmt(report['proxy_saw'])} "
        f"({report['proxy_connections']} connections, one bootstrap connection per reader), and per tick "
        + (
            "nothing: it cannot count tick traffic, which is why the packet capture is the independent count."
            if not any(r.proxy_per_read for r in rows)
            else "; ".join(f"{r.groups} groups: {_fmt(r.proxy_per_read)}" for r in rows) + "."
        )
        + f" aiokafka held {', '.join(str(r.reader_connections) for r in rows)} connection(s) per reader "
        "after the reads.",
        "",
        "The KEDA column is a model of KEDA's Kafka scaler, not a measurement: per its design each "
        "ScaledObject is evaluated on its own, with at least an OffsetFetch for its group and a ListOffsets "
        "for its partitions (plus metadata), so ≥ 2 × groups requests per evaluation round.",
        "",
    ]
    return "\n".join(lines)


def devstack_sasl_ssl(scratch: Path) -> connections.KafkaConnection:
    """The devstack broker's SASL_SSL listener as its SCRAM-SHA-512 user (password file in ``scratch``)."""
    from devstack import certs
    from devstack.config import KAFKA_USERS, layout

    stack = layout()
    user = next(u for u in KAFKA_USERS if u.mechanism == "SCRAM-SHA-512")
    password = scratch / ".devstack-scram-password"
    scratch.mkdir(parents=True, exist_ok=True)
    password.write_text(user.password)
    sasl = {"mechanism": user.mechanism, "username": user.name, "password-file": str(password)}
    document = {"bootstrap": stack.kafka_sasl_ssl_bootstrap, "tls": {"ca-file": str(certs.ensure(stack).ca)}}
    return connections.KafkaConnection.model_validate({"name": "sasl-ssl", **document, "sasl": sasl})


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[Row]]:
    counts = sorted({int(x) for x in args.groups.split(",")})
    run_id = uuid.uuid4().hex[:8]
    topics = [f"bench-kreq-{run_id}-t{i}" for i in range(args.topics)]
    groups = [f"bench-kreq-{run_id}-g{i:04d}" for i in range(max(counts))]
    port = int(args.bootstrap.rsplit(":", 1)[1])
    capture: LoopbackCapture | None = None
    capture_reason = ""
    secured = (
        connections.load(args.connections).kafka_connection(args.connection) if args.connections else None
    )
    if args.devstack_sasl_ssl:
        secured = devstack_sasl_ssl(Path(tempfile.mkdtemp(prefix="bench-kafka-requests-")))
    if secured is not None:
        capture_reason = f"the reader talks {secured.security_protocol}: encrypted, nothing to parse"
    elif args.capture:
        try:
            capture = LoopbackCapture(port)
            capture.start()
        except (PermissionError, OSError) as exc:
            capture, capture_reason = None, f"cannot open a packet socket ({exc}); run as root"
    else:
        capture_reason = "--no-capture"
    proxy = CountingProxy(args.bootstrap)
    proxy_address = await proxy.start()
    rows: list[Row] = []
    stats = (0, 0)
    try:
        print(
            f"creating {len(topics)} topics and committing offsets for {len(groups)} groups", file=sys.stderr
        )
        started = time.monotonic()
        await create_topics(args.bootstrap, topics, args.partitions)
        await fill(args.bootstrap, topics, args.partitions, 50)
        await commit_groups(args.bootstrap, groups, topics, args.partitions)
        print(f"set-up took {time.monotonic() - started:.1f}s", file=sys.stderr)
        for n in counts:
            queries = [offsets.GroupQuery(g, (topics[i % len(topics)],)) for i, g in enumerate(groups[:n])]
            row = await measure(
                proxy=proxy,
                proxy_address=secured if secured is not None else proxy_address,
                capture=capture,
                queries=queries,
                reads=args.reads,
                settle=0.3,
            )
            rows.append(row)
            print(
                f"{n:>5} groups: ours {row.ours_per_read} capture {row.capture_per_read} "
                f"p50 {row.read_ms_p50} ms",
                file=sys.stderr,
            )
    finally:
        await proxy.close()
        if capture is not None:
            stats = capture.stop()
        if not args.keep:
            await delete_topics(args.bootstrap, topics)

    proxy_saw: Counter[str] = Counter()
    for (_cid, api), n in proxy.counts.items():
        proxy_saw[api] += n
    report: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.kafka_requests", *sys.argv[1:]]),
        "bootstrap": args.bootstrap if secured is None else secured.bootstrap_servers,
        "security_protocol": "PLAINTEXT" if secured is None else secured.security_protocol,
        "sasl_mechanism": None if secured is None or secured.sasl is None else secured.sasl.mechanism,
        "topics": args.topics,
        "partitions_per_topic": args.partitions,
        "reads": args.reads,
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "metric_agrees": all(r.metric_per_read == r.ours_per_read for r in rows),
        "capture_agrees": capture is not None
        and all(
            {k: v for k, v in r.capture_per_read.items() if k != "ApiVersions"} == r.ours_per_read
            for r in rows
        ),
        "capture": {
            "enabled": capture is not None,
            "reason": capture_reason,
            "port": port,
            "filtered_in_kernel": capture.filtered_in_kernel if capture else False,
            "packets": stats[0],
            "drops": stats[1],
            "broken_streams": capture.broken_streams if capture else 0,
        },
        "proxy_saw": dict(proxy_saw),
        "proxy_connections": proxy.connections,
        "keda_column": KEDA_MODEL,
        "rows": [
            {
                "groups": r.groups,
                "topics": r.topics,
                "partitions": r.partitions,
                "reads": r.reads,
                "requests_per_tick_ours": r.ours_total,
                "requests_per_tick_ours_by_api": r.ours_per_read,
                "requests_per_tick_metric_by_api": r.metric_per_read,
                "requests_per_tick_capture_by_api": r.capture_per_read,
                "requests_per_tick_proxy_by_api": r.proxy_per_read,
                "warmup_ours_by_api": r.warmup_ours,
                "warmup_capture_by_api": r.warmup_capture,
                "warmup_proxy_by_api": r.warmup_proxy,
                "aiokafka_connections": r.reader_connections,
                "read_ms_p50": r.read_ms_p50,
                "read_ms_max": r.read_ms_max,
                "keda_model_requests_per_evaluation": r.keda_model,
            }
            for r in rows
        ],
    }
    return report, rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.kafka_requests",
        description="Kafka requests per controller tick (one batched OffsetReader.read) for 1 to 1,000 "
        "consumer groups, counted by our counter, a packet capture on lo and a bootstrap proxy.",
    )
    p.add_argument(
        "--bootstrap", default=os.environ.get("QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    p.add_argument(
        "--groups", default="1,10,100,1000", help="comma list of group counts (default %(default)s)"
    )
    p.add_argument("--topics", type=int, default=10, help="shared topics (default %(default)s)")
    p.add_argument("--partitions", type=int, default=6, help="partitions per topic (default %(default)s)")
    p.add_argument(
        "--reads", type=int, default=20, help="measured reads per group count (default %(default)s)"
    )
    p.add_argument(
        "--capture",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count requests with a packet capture on lo too (needs root; default on)",
    )
    p.add_argument("--keep", action="store_true", help="keep the topics (and so the groups' offsets)")
    p.add_argument("--connections", default=None, help="connections file: read over a named connection")
    p.add_argument("--connection", default="default", help="the connection of --connections to read over")
    p.add_argument(
        "--devstack-sasl-ssl",
        action="store_true",
        help="read over the devstack broker's SASL_SSL listener (SCRAM-SHA-512 user, devstack CA)",
    )
    p.add_argument("--out", default=str(RESULTS), help="results directory (default bench/results)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    obs_logging.configure(log_format="console", level="warning")
    report, rows = asyncio.run(run(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "kafka_requests"
    if args.devstack_sasl_ssl:
        stem += "_sasl_ssl"
    elif args.connections:
        stem += f"_{args.connection}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(report, rows))
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
