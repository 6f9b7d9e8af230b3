"""Arrival traces: how many records (or requests) arrive in each simulation step.

A trace is a rate profile (records/s as a function of the seconds since the start, the same ``Profile``
``bench/load.py`` replays against Kafka) turned into whole arrivals per step by a seeded Poisson draw, so a
trace is identical for every policy that replays it and between runs with the same seed.

Shapes:

- ``spike``, ``step``: a sudden burst and a lasting change of load (``bench.load.spike``, ``step``).
- ``diurnal``: a compressed day, ``mean + amplitude × sin``. Shahrad et al., "Serverless in the Wild:
  Characterizing and Optimizing the Serverless Workload at a Large Cloud Provider", USENIX ATC 2020
  (the Azure Functions trace), find a strong diurnal pattern in invocations of most applications (their
  figure 5, invocations per hour over two weeks); the day is compressed here so a run stays short.
- ``bursty``: an on/off Markov source (exponentially distributed on and off periods): the same paper finds
  inter-arrival times far more variable than Poisson (coefficient of variation well above 1 for most
  applications, their figure 8), which alternating busy and silent periods reproduce; off periods longer
  than scale-to-zero-after exercise the cold start.
- ``csv``: recorded ``timestamp,count`` buckets (seconds since the start, arrivals in the bucket that
  starts there), spread evenly over each bucket.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench import load

STEP = 0.1  # seconds per simulation step

Kind = Literal["kafka", "http"]


@dataclass(frozen=True)
class Trace:
    """Arrivals per step of ``step`` seconds. ``kind`` says whether they are Kafka records or HTTP requests;
    ``bursts`` are the (start_s, end_s) periods of load, used to count direction changes per burst;
    ``points`` is the rate as (time_s, rate) points that ``bench.load trace`` can replay."""

    name: str
    kind: Kind
    arrivals: tuple[int, ...]
    step: float
    bursts: tuple[tuple[float, float], ...]
    points: tuple[tuple[float, float], ...]
    description: str

    @property
    def duration(self) -> float:
        return len(self.arrivals) * self.step

    @property
    def total(self) -> int:
        return sum(self.arrivals)


def from_profile(
    name: str,
    profile: load.Profile,
    *,
    duration: float,
    seed: int,
    kind: Kind = "kafka",
    bursts: Sequence[tuple[float, float]] = (),
    description: str = "",
    step: float = STEP,
) -> Trace:
    """Poisson arrivals per step with mean ``profile(t) × step`` (the rate at the step's middle)."""
    if duration <= 0 or step <= 0:
        raise ValueError(f"duration and step must be > 0 seconds, got {duration} and {step}")
    steps = round(duration / step)
    rates = [profile((i + 0.5) * step) for i in range(steps)]
    if any(r < 0 or not math.isfinite(r) for r in rates):
        raise ValueError(f"trace {name}: rates must be finite and >= 0")
    rng = np.random.default_rng(seed)
    arrivals = tuple(int(n) for n in rng.poisson(np.asarray(rates) * step))
    per_second = [profile(float(t)) for t in range(math.ceil(duration) + 1)]
    points = tuple((float(t), r) for t, r in enumerate(per_second))
    return Trace(name, kind, arrivals, step, tuple(bursts), points, description)


def spike(
    *, base: float, peak: float, at: float, width: float, duration: float, seed: int, kind: Kind = "kafka"
) -> Trace:
    return from_profile(
        "spike" if kind == "kafka" else "spike-http",
        load.spike(base, peak, at, width),
        duration=duration,
        seed=seed,
        kind=kind,
        bursts=[(at, at + width)],
        description=f"{base:g}/s, {peak:g}/s for {width:g} s at {at:g} s",
    )


def step(*, before: float, after: float, at: float, until: float, duration: float, seed: int) -> Trace:
    """``before``/s, ``after``/s from ``at`` to ``until``, then ``before`` again (a step up and one down)."""

    def profile(t: float) -> float:
        return after if at <= t < until else before

    return from_profile(
        "step",
        profile,
        duration=duration,
        seed=seed,
        bursts=[(at, until)],
        description=f"{before:g}/s, {after:g}/s from {at:g} s to {until:g} s",
    )


def diurnal(*, mean: float, amplitude: float, period: float, duration: float, seed: int) -> Trace:
    """A compressed day (Shahrad et al., ATC 2020). Its bursts are the days from trough to trough (the
    first from the start, at the mean, to the first trough): up to the peak and down again is one."""
    starts = [0.0]
    t = 0.75 * period
    while t < duration:
        starts.append(t)
        t += period
    bursts = [(a, b) for a, b in zip(starts, [*starts[1:], duration], strict=True)]
    return from_profile(
        "diurnal",
        load.sine(mean, amplitude, period),
        duration=duration,
        seed=seed,
        bursts=bursts,
        description=f"{mean:g} ± {amplitude:g}/s, period {period:g} s",
    )


def bursty(
    *, rate: float, mean_on: float, mean_off: float, duration: float, seed: int, kind: Kind = "kafka"
) -> Trace:
    """An on/off Markov source: ``rate``/s while on, nothing while off, exponential periods (means in s).
    Starts off, so the first burst is a wake-up from zero."""
    if mean_on <= 0 or mean_off <= 0:
        raise ValueError("mean_on and mean_off must be > 0 seconds")
    rng = np.random.default_rng(seed + 1)
    bursts: list[tuple[float, float]] = []
    t = float(rng.exponential(mean_off))
    while t < duration:
        length = float(rng.exponential(mean_on))
        bursts.append((t, min(t + length, duration)))
        t += length + float(rng.exponential(mean_off))

    def profile(at: float) -> float:
        return rate if any(start <= at < end for start, end in bursts) else 0.0

    return from_profile(
        "bursty" if kind == "kafka" else "bursty-http",
        profile,
        duration=duration,
        seed=seed,
        kind=kind,
        bursts=bursts,
        description=f"on/off Markov, {rate:g}/s while on, mean on {mean_on:g} s, mean off {mean_off:g} s",
    )


def parse_csv(text: str) -> list[tuple[float, int]]:
    """``timestamp,count`` lines (seconds since the start, arrivals in the bucket starting there); blank
    lines, ``#`` comments and a header are skipped. Raises ValueError naming the first bad line."""
    rows: list[tuple[float, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if not rows and fields[0] and not fields[0].replace(".", "", 1).isdigit():
            continue  # a header
        try:
            if len(fields) != 2:
                raise ValueError
            timestamp, count = float(fields[0]), int(fields[1])
        except ValueError:
            raise ValueError(
                f"trace line {number}: expected 'timestamp,count' (seconds >= 0, a whole count >= 0), "
                f"got {raw!r}"
            ) from None
        if timestamp < 0 or count < 0 or not math.isfinite(timestamp):
            raise ValueError(f"trace line {number}: timestamp and count must be >= 0, got {raw!r}")
        if rows and timestamp <= rows[-1][0]:
            raise ValueError(f"trace line {number}: timestamps must increase, got {raw!r}")
        rows.append((timestamp, count))
    if not rows:
        raise ValueError("the trace has no 'timestamp,count' lines")
    return rows


def from_csv(name: str, text: str, *, step: float = STEP, kind: Kind = "kafka") -> Trace:
    """Each bucket's count spread evenly over its steps (the last bucket as wide as the one before it, or
    one second); whole arrivals, no randomness. Bursts are the runs of non-empty buckets."""
    rows = parse_csv(text)
    widths = [b[0] - a[0] for a, b in itertools.pairwise(rows)]
    widths.append(widths[-1] if widths else 1.0)
    end = rows[-1][0] + widths[-1]
    arrivals = [0] * round(end / step)
    bursts: list[tuple[float, float]] = []
    points: list[tuple[float, float]] = []
    for (start, count), width in zip(rows, widths, strict=True):
        first, last = round(start / step), max(round((start + width) / step), round(start / step) + 1)
        last = min(last, len(arrivals))
        span = max(last - first, 1)
        for i in range(span):
            # Whole records, spread so the bucket's total is exact.
            arrivals[first + i] += (count * (i + 1)) // span - (count * i) // span
        points.extend([(start, count / width), (start + width, count / width)])
        if count:
            if bursts and math.isclose(bursts[-1][1], start):
                bursts[-1] = (bursts[-1][0], start + width)
            else:
                bursts.append((start, start + width))
    return Trace(name, kind, tuple(arrivals), step, tuple(bursts), tuple(points), f"{len(rows)} CSV buckets")
