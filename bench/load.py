"""Produce records to a Kafka topic following a rate profile, for watching the autoscaler react.

    python -m bench.load constant --rate 200 --duration 60 --topic billing
    python -m bench.load step --before 20 --after 400 --at 30 --duration 90 --topic billing
    python -m bench.load spike --base 10 --peak 1000 --at 20 --width 5 --duration 60 --topic billing
    python -m bench.load sine --mean 200 --amplitude 150 --period 60 --duration 180 --topic billing
    python -m bench.load trace --file trace.csv --topic billing --cloudevents binary
    python -m bench.load constant --rate 50 --duration 30 --sink rabbitmq --topic orders
    python -m bench.load step --before 0 --after 100 --at 5 --duration 30 --sink redis --topic orders
    python -m bench.load constant --rate 50 --duration 30 --sink nats --topic orders.new

``--sink rabbitmq|redis|nats`` sends the same records to a RabbitMQ queue (declared when missing, publisher
confirms), a Redis stream (XADD, one pipelined round trip per tick) or a NATS JetStream subject (a stream
must capture it; every publish awaits its ack) named by ``--topic``, at ``--url`` (default: the devstack's
server). CloudEvents modes and keys are Kafka's only.

A profile maps the seconds since the start to a rate in records per second. The producer sends, every tick
(50 ms), the records that the integral of the rate says are due, so the records sent follow the profile
within one tick's worth; a broker that cannot keep up shows as "behind" in the progress output.

Records are JSON (``{"seq": n, "sent_at": <unix time>, "pad": "..."}``, padded to ``--record-bytes``), or
CloudEvents 1.0 on the Kafka protocol binding: ``binary`` mode puts the attributes in ``ce_*`` headers
(``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``, ``ce_time``) with ``content-type`` naming the
data's media type and the data as the value; ``structured`` mode sends the whole event as a JSON value with
``content-type: application/cloudevents+json; charset=UTF-8``.

Every run is bounded: by ``--duration`` seconds and by ``--max-records`` records, whichever comes first.
Defaults to the devstack's broker ($QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP, else 127.0.0.1:19092); give
``--bootstrap`` for another cluster. The topic is created with ``--partitions`` partitions when missing.

Importable: ``await run_profile(profile, bootstrap=..., topic=..., duration=...)`` with a profile from
``constant``, ``step``, ``spike``, ``sine`` or ``trace``.

``python -m bench.load PROFILE --help`` lists the profile's own options and the common ones.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench import sinks
from bench.sinks import Sink

Profile = Callable[[float], float]
"""Seconds since the start -> records per second (never negative)."""

CloudEventsMode = Literal["none", "binary", "structured"]
CLOUDEVENTS_MODES: tuple[CloudEventsMode, ...] = ("none", "binary", "structured")

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_MAX_RECORDS = 1_000_000
MAX_DURATION = 86_400.0
TICK = 0.05
MAX_PENDING = 20_000  # deliveries awaited at once; beyond this the producer waits for the broker
JSON_TYPE = "application/json"
STRUCTURED_TYPE = "application/cloudevents+json; charset=UTF-8"


def default_bootstrap() -> str:
    return os.environ.get("QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)


# --- profiles (pure) ------------------------------------------------------------------------------------


def _rate(value: float, name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite rate >= 0 records/s, not {value}")
    return value


def constant(rate: float) -> Profile:
    """``rate`` records/s throughout."""
    _rate(rate, "rate")
    return lambda t: rate


def step(before: float, after: float, at: float) -> Profile:
    """``before`` records/s until ``at`` seconds, ``after`` from then on."""
    _rate(before, "before")
    _rate(after, "after")
    return lambda t: before if t < at else after


def spike(base: float, peak: float, at: float, width: float) -> Profile:
    """``base`` records/s, except ``peak`` during ``width`` seconds from ``at``."""
    _rate(base, "base")
    _rate(peak, "peak")
    if width <= 0:
        raise ValueError(f"width must be > 0 seconds, not {width}")
    return lambda t: peak if at <= t < at + width else base


def sine(mean: float, amplitude: float, period: float) -> Profile:
    """``mean + amplitude * sin(2πt / period)`` records/s, cut at 0 when amplitude > mean."""
    _rate(mean, "mean")
    if period <= 0:
        raise ValueError(f"period must be > 0 seconds, not {period}")
    return lambda t: max(0.0, mean + amplitude * math.sin(2 * math.pi * t / period))


def trace(points: Sequence[tuple[float, float]]) -> Profile:
    """A recorded rate: linear between the (time_s, rate) points, the first rate before the first point and
    the last after the last. Two points at the same time make a step."""
    if not points:
        raise ValueError("a trace needs at least one (time_s, rate) point")
    times = [t for t, _ in points]
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError("trace times must not decrease")
    rates = [_rate(r, f"the rate at {t}s") for t, r in points]

    def profile(t: float) -> float:
        i = bisect.bisect_right(times, t)
        if i == 0:
            return rates[0]
        if i == len(times):
            return rates[-1]
        t0, t1, r0, r1 = times[i - 1], times[i], rates[i - 1], rates[i]
        return r0 if t1 == t0 else r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    return profile


def parse_trace(text: str) -> list[tuple[float, float]]:
    """``time_s,rate`` per line; blank lines, ``#`` comments and a ``time_s,rate`` header are skipped.

    Raises ValueError naming the first bad line."""
    points: list[tuple[float, float]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if not points and fields and not _is_number(fields[0]):
            continue  # a header
        if len(fields) != 2 or not all(_is_number(f) for f in fields):
            raise ValueError(f"trace line {number}: expected 'time_s,rate', got {raw!r}")
        time_s, rate = float(fields[0]), float(fields[1])
        if time_s < 0 or rate < 0:
            raise ValueError(f"trace line {number}: time and rate must be >= 0, got {raw!r}")
        points.append((time_s, rate))
    if not points:
        raise ValueError("the trace has no 'time_s,rate' lines")
    return points


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


class Schedule:
    """How many records are due by time t: the integral of the profile by the midpoint rule on a fixed grid
    of ``resolution`` seconds (so a step in the rate lands on the grid without drift), capped at
    ``max_records``. Times must not decrease."""

    def __init__(self, profile: Profile, *, max_records: int, resolution: float = 0.01) -> None:
        self._profile = profile
        self._max = max_records
        self._resolution = resolution
        self._steps = 0  # whole grid steps integrated into _area
        self._area = 0.0

    def due(self, t: float) -> int:
        """Records that should have been sent by ``t`` seconds."""
        res = self._resolution
        while (self._steps + 1) * res <= t:
            self._area += max(0.0, self._profile((self._steps + 0.5) * res)) * res
            self._steps += 1
        done = self._steps * res
        partial = max(0.0, self._profile((done + t) / 2)) * (t - done) if t > done else 0.0
        # A hair below the next integer counts as it, so that 100/s for 1 s is 100, not 99.
        return min(self._max, math.floor(self._area + partial + 1e-6))


def expected_records(profile: Profile, duration: float, *, max_records: int = DEFAULT_MAX_RECORDS) -> int:
    """Records a run of ``duration`` seconds sends when the broker keeps up."""
    return Schedule(profile, max_records=max_records).due(duration)


# --- records (pure) -------------------------------------------------------------------------------------


Headers = list[tuple[str, bytes]]


def record(
    seq: int,
    *,
    mode: CloudEventsMode = "none",
    record_bytes: int = 100,
    ce_type: str = "dev.queue-autoscaler.bench.load",
    ce_source: str = "/bench/load",
    now: float | None = None,
    event_id: str | None = None,
) -> tuple[bytes, Headers]:
    """The value and headers of record number ``seq``: JSON data padded to about ``record_bytes``, as is
    or as a binary- or structured-mode CloudEvent (Kafka protocol binding of CloudEvents 1.0)."""
    sent_at = time.time() if now is None else now
    data: dict[str, Any] = {"seq": seq, "sent_at": round(sent_at, 6)}
    size = len(json.dumps(data, separators=(",", ":"))) + len(',"pad":""')
    data["pad"] = "x" * max(0, record_bytes - size)
    if mode == "none":
        return json.dumps(data, separators=(",", ":")).encode(), []
    attributes = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": ce_source,
        "type": ce_type,
        "time": datetime.fromtimestamp(sent_at, UTC).isoformat().replace("+00:00", "Z"),
    }
    if mode == "binary":
        headers = [(f"ce_{name}", value.encode()) for name, value in attributes.items()]
        headers.append(("content-type", JSON_TYPE.encode()))
        return json.dumps(data, separators=(",", ":")).encode(), headers
    event = {**attributes, "datacontenttype": JSON_TYPE, "data": data}
    return json.dumps(event, separators=(",", ":")).encode(), [("content-type", STRUCTURED_TYPE.encode())]


# --- progress -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    elapsed: float
    duration: float
    sent: int
    due: int
    rate: float  # the profile's rate now
    max_records: int


def progress_line(p: Progress, *, width: int = 30) -> str:
    """One line: a bar on the time axis, records sent, the target rate and how far behind the schedule."""
    done = min(1.0, p.elapsed / p.duration) if p.duration > 0 else 1.0
    filled = round(done * width)
    bar = "#" * filled + "." * (width - filled)
    behind = p.due - p.sent
    return (
        f"[{bar}] {p.elapsed:6.1f}/{p.duration:.0f}s  sent {p.sent:>9,}  target {p.rate:8.1f}/s"
        + (f"  behind {behind:,}" if behind > 0 else "")
        + ("  (max records reached)" if p.sent >= p.max_records else "")
    )


class ReportFn(Protocol):
    def __call__(self, progress: Progress, *, final: bool = False) -> None: ...


class Reporter:
    """A progress bar redrawn in place on a terminal; otherwise a plain line every ``every`` seconds."""

    def __init__(self, stream: TextIO = sys.stderr, *, every: float = 5.0, tty: bool | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._every = every
        self._last = -math.inf

    def __call__(self, progress: Progress, *, final: bool = False) -> None:
        if self._tty:
            if final or progress.elapsed - self._last >= 0.2:
                self._stream.write("\r" + progress_line(progress) + ("\n" if final else ""))
                self._stream.flush()
                self._last = progress.elapsed
        elif final or progress.elapsed - self._last >= self._every:
            self._stream.write(progress_line(progress) + "\n")
            self._stream.flush()
            self._last = progress.elapsed


# --- producing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    sent: int  # records handed to the producer
    delivered: int  # records the broker acknowledged
    failed: int
    seconds: float
    topic: str


async def ensure_topic(bootstrap: str, topic: str, partitions: int, *, replication: int = 1) -> bool:
    """Creates ``topic`` with ``partitions`` partitions unless it exists; True when it created it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        if topic in await admin.list_topics():
            return False
        response = await admin.create_topics([NewTopic(topic, partitions, replication)])
    except TopicAlreadyExistsError:
        return False
    finally:
        await admin.close()
    codes = [code for _name, code, *_ in response.topic_errors if code]
    if codes == [TopicAlreadyExistsError.errno]:
        return False
    if codes:
        raise RuntimeError(f"creating topic {topic}: Kafka error codes {codes}")
    return True


async def delete_topic(bootstrap: str, topic: str, *, timeout: float = 10.0) -> None:
    """Deletes ``topic`` if it exists and returns once Kafka no longer lists it; RuntimeError after
    ``timeout`` seconds."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return
        await admin.delete_topics([topic])
        for _ in range(max(1, round(timeout / 0.1))):
            if topic not in await admin.list_topics():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic} was not deleted within {timeout:g} s")
    finally:
        await admin.close()


async def run_profile(
    profile: Profile,
    *,
    topic: str,
    duration: float,
    bootstrap: str | None = None,
    max_records: int = DEFAULT_MAX_RECORDS,
    partitions: int | None = None,
    cloudevents: CloudEventsMode = "none",
    ce_type: str = "dev.queue-autoscaler.bench.load",
    ce_source: str = "/bench/load",
    record_bytes: int = 100,
    key_space: int = 0,
    report: ReportFn | None = None,
    stop: asyncio.Event | None = None,
    sink: Sink | None = None,
) -> LoadResult:
    """Produces to ``topic`` at ``profile``'s rate for ``duration`` seconds, at most ``max_records``.

    ``partitions``: create the topic with that many partitions when it is missing. ``key_space`` > 0 keys
    record n with ``str(n % key_space)`` (spreading by key hash); 0 sends without keys. ``report`` is called
    with a Progress every tick (and ``final=True`` at the end), e.g. a ``Reporter()``. Setting ``stop``
    ends the run early. Waits for every delivery before returning. With a ``sink`` (RabbitMQ, Redis or
    NATS, see ``bench.sinks``) each tick's records go to it instead of Kafka.
    """
    if sink is not None:
        return await _run_to_sink(
            profile,
            sink=sink,
            topic=topic,
            duration=duration,
            max_records=max_records,
            record_bytes=record_bytes,
            report=report,
            stop=stop,
        )
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be > 0 and at most {MAX_DURATION:.0f} s, not {duration}")
    if max_records < 0:
        raise ValueError(f"max_records must be >= 0, not {max_records}")
    if cloudevents not in CLOUDEVENTS_MODES:
        raise ValueError(f"cloudevents must be one of {CLOUDEVENTS_MODES}, not {cloudevents!r}")
    bootstrap = bootstrap or default_bootstrap()
    if partitions is not None:
        await ensure_topic(bootstrap, topic, partitions)
    schedule = Schedule(profile, max_records=max_records)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    loop = asyncio.get_running_loop()
    sent = delivered = failed = 0
    pending: list[asyncio.Future[Any]] = []

    async def settle(futures: list[asyncio.Future[Any]]) -> None:
        nonlocal delivered, failed
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(outcome, BaseException):
                failed += 1
            else:
                delivered += 1

    started = loop.time()
    elapsed = 0.0
    try:
        while elapsed < duration and sent < max_records and not (stop is not None and stop.is_set()):
            due = schedule.due(elapsed)
            while sent < due:
                value, headers = record(
                    sent, mode=cloudevents, record_bytes=record_bytes, ce_type=ce_type, ce_source=ce_source
                )
                key = str(sent % key_space).encode() if key_space > 0 else None
                pending.append(await producer.send(topic, value, key=key, headers=headers or None))
                sent += 1
                if len(pending) >= MAX_PENDING:
                    await settle(pending)
                    pending = []
            if report is not None:
                report(Progress(elapsed, duration, sent, due, profile(elapsed), max_records))
            next_tick = started + (math.floor(elapsed / TICK) + 1) * TICK
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_tick - loop.time()))
            else:
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
            elapsed = min(duration, loop.time() - started)
        # The last partial tick: whatever the schedule says is due by the end of the run.
        if not (stop is not None and stop.is_set()):
            for _ in range(sent, schedule.due(elapsed)):
                value, headers = record(
                    sent, mode=cloudevents, record_bytes=record_bytes, ce_type=ce_type, ce_source=ce_source
                )
                key = str(sent % key_space).encode() if key_space > 0 else None
                pending.append(await producer.send(topic, value, key=key, headers=headers or None))
                sent += 1
        await producer.flush()
        await settle(pending)
    finally:
        await producer.stop()
    if report is not None:
        report(Progress(elapsed, duration, sent, sent, profile(elapsed), max_records), final=True)
    return LoadResult(sent, delivered, failed, loop.time() - started, topic)


async def _run_to_sink(
    profile: Profile,
    *,
    sink: Sink,
    topic: str,
    duration: float,
    max_records: int,
    record_bytes: int,
    report: ReportFn | None,
    stop: asyncio.Event | None,
) -> LoadResult:
    """run_profile's loop for a non-Kafka sink: every tick, the records due, in one batch."""
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be > 0 and at most {MAX_DURATION:.0f} s, not {duration}")
    schedule = Schedule(profile, max_records=max_records)
    loop = asyncio.get_running_loop()
    sent = delivered = 0
    started = loop.time()
    elapsed = 0.0

    async def send_due(due: int) -> None:
        nonlocal sent, delivered
        if due > sent:
            batch = [record(n, record_bytes=record_bytes)[0] for n in range(sent, due)]
            delivered += await sink.send_batch(batch)
            sent = due

    while elapsed < duration and sent < max_records and not (stop is not None and stop.is_set()):
        due = schedule.due(elapsed)
        await send_due(due)
        if report is not None:
            report(Progress(elapsed, duration, sent, due, profile(elapsed), max_records))
        next_tick = started + (math.floor(elapsed / TICK) + 1) * TICK
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        elapsed = min(duration, loop.time() - started)
    if not (stop is not None and stop.is_set()):
        await send_due(schedule.due(elapsed))
    if report is not None:
        report(Progress(elapsed, duration, sent, sent, profile(elapsed), max_records), final=True)
    return LoadResult(sent, delivered, sent - delivered, loop.time() - started, topic)


# --- command line ---------------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number > 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number >= 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 0")
    return int(text)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where to produce")
    where.add_argument(
        "--bootstrap",
        default=default_bootstrap(),
        help="Kafka bootstrap servers host:port[,host:port] "
        "(default $QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP, else the devstack's 127.0.0.1:19092)",
    )
    where.add_argument(
        "--topic", required=True, help="topic to produce to (with --sink: the queue, stream or subject)"
    )
    where.add_argument(
        "--sink",
        choices=sinks.SINKS,
        default="kafka",
        help="where to send: kafka (default), a rabbitmq queue, a redis stream or a nats JetStream subject",
    )
    where.add_argument(
        "--url",
        default=None,
        help="server URL for --sink rabbitmq|redis|nats (default: the devstack's: "
        + ", ".join(f"{k} {v}" for k, v in sinks.DEFAULT_URLS.items())
        + ")",
    )
    where.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="create the topic with this many partitions when it does not exist (default: do not create)",
    )
    bounds = common.add_argument_group("bounds (the run stops at whichever comes first)")
    bounds.add_argument(
        "--duration",
        type=_positive,
        default=60.0,
        help=f"seconds to run (default 60, at most {MAX_DURATION:.0f})",
    )
    bounds.add_argument(
        "--max-records",
        type=_count,
        default=DEFAULT_MAX_RECORDS,
        help=f"records to send at most (default {DEFAULT_MAX_RECORDS:,})",
    )
    shape = common.add_argument_group("records")
    shape.add_argument(
        "--record-bytes",
        type=_count,
        default=100,
        help="approximate size of each record's data (default 100)",
    )
    shape.add_argument(
        "--key-space",
        type=_count,
        default=0,
        help="key record n with n mod this, spreading records by key hash (default 0: no key)",
    )
    shape.add_argument(
        "--cloudevents",
        choices=CLOUDEVENTS_MODES,
        default="none",
        help="send CloudEvents 1.0 on the Kafka binding: binary (ce_* headers, data as the value) or "
        "structured (the whole event as JSON); default none (plain JSON records)",
    )
    shape.add_argument(
        "--ce-type",
        default="dev.queue-autoscaler.bench.load",
        help="CloudEvents type attribute (default dev.queue-autoscaler.bench.load)",
    )
    shape.add_argument("--ce-source", default="/bench/load", help="CloudEvents source (default /bench/load)")
    output = common.add_argument_group("output")
    output.add_argument(
        "--report-every",
        type=_positive,
        default=5.0,
        help="seconds between progress lines when stderr is not a terminal (default 5); on a terminal a "
        "progress bar is redrawn in place",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _common()
    profiles = parser.add_subparsers(dest="profile", required=True, metavar="PROFILE")
    p = profiles.add_parser("constant", parents=[common], help="a constant rate")
    p.add_argument("--rate", type=_non_negative, required=True, help="records per second")
    p = profiles.add_parser("step", parents=[common], help="one rate, then another from a point in time")
    p.add_argument("--before", type=_non_negative, required=True, help="records per second before --at")
    p.add_argument("--after", type=_non_negative, required=True, help="records per second from --at on")
    p.add_argument("--at", type=_non_negative, required=True, help="seconds from the start of the step")
    p = profiles.add_parser("spike", parents=[common], help="a base rate with one burst")
    p.add_argument("--base", type=_non_negative, required=True, help="records per second outside the burst")
    p.add_argument("--peak", type=_non_negative, required=True, help="records per second during the burst")
    p.add_argument("--at", type=_non_negative, required=True, help="seconds from the start of the burst")
    p.add_argument("--width", type=_positive, required=True, help="seconds the burst lasts")
    p = profiles.add_parser("sine", parents=[common], help="a rate oscillating around a mean")
    p.add_argument("--mean", type=_non_negative, required=True, help="mean records per second")
    p.add_argument(
        "--amplitude", type=_non_negative, required=True, help="records per second above and below the mean"
    )
    p.add_argument("--period", type=_positive, required=True, help="seconds per oscillation")
    p = profiles.add_parser(
        "trace",
        parents=[common],
        help="a recorded rate from a CSV file",
        description="Rates from a CSV file of 'time_s,rate' lines (a header, blank lines and # comments are "
        "skipped); linear between points, the first rate before the first point and the last after the "
        "last; two lines with the same time make a step.",
    )
    p.add_argument("--file", type=Path, required=True, help="CSV file of time_s,rate lines")
    return parser


def profile_from_args(args: argparse.Namespace) -> Profile:
    if args.profile == "constant":
        return constant(args.rate)
    if args.profile == "step":
        return step(args.before, args.after, args.at)
    if args.profile == "spike":
        return spike(args.base, args.peak, args.at, args.width)
    if args.profile == "sine":
        return sine(args.mean, args.amplitude, args.period)
    return trace(parse_trace(args.file.read_text()))


async def _main(args: argparse.Namespace) -> int:
    profile = profile_from_args(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    expected = expected_records(profile, args.duration, max_records=args.max_records)
    where = args.bootstrap if args.sink == "kafka" else (args.url or sinks.DEFAULT_URLS[args.sink])
    print(
        f"producing to {args.sink} {args.topic} at {where}: {args.profile} profile for {args.duration:g}s, "
        f"about {expected:,} records",
        file=sys.stderr,
    )
    if args.sink != "kafka":
        async with sinks.opened(args.sink, name=args.topic, url=args.url) as sink:
            result = await run_profile(
                profile,
                topic=args.topic,
                duration=args.duration,
                max_records=args.max_records,
                record_bytes=args.record_bytes,
                report=Reporter(every=args.report_every),
                stop=stop,
                sink=sink,
            )
    else:
        result = await run_profile(
            profile,
            topic=args.topic,
            duration=args.duration,
            bootstrap=args.bootstrap,
            max_records=args.max_records,
            partitions=args.partitions,
            cloudevents=args.cloudevents,
            ce_type=args.ce_type,
            ce_source=args.ce_source,
            record_bytes=args.record_bytes,
            key_space=args.key_space,
            report=Reporter(every=args.report_every),
            stop=stop,
        )
    print(
        f"sent {result.sent:,} records in {result.seconds:.1f}s; delivered {result.delivered:,}, "
        f"failed {result.failed:,}",
        file=sys.stderr,
    )
    return 1 if result.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (ValueError, OSError) as exc:
        print(f"bench.load: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
