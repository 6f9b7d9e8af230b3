"""The lag table of ``queue-autoscaler lag``, laid out like Kafka's ``kafka-consumer-groups --describe``."""

from __future__ import annotations

from collections.abc import Iterable

from autoscaler.model import PartitionOffsets

HEADERS = ("TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LOG-START-OFFSET")


def tool_lag(row: PartitionOffsets) -> int | None:
    """Log end offset minus committed offset, as Kafka's tool shows it; None when either is unknown."""
    if row.committed is None or row.end is None:
        return None
    return row.end - row.committed


def format_lag_table(rows: Iterable[PartitionOffsets]) -> str:
    """One line per partition, sorted by topic and partition, '-' for unknown values, then a TOTAL line
    summing the known lags ('-' when there are partitions but none has a known lag)."""
    ordered = sorted(rows, key=lambda r: (r.topic, r.partition))
    lags = [tool_lag(r) for r in ordered]
    known = [lag for lag in lags if lag is not None]
    lines = [HEADERS]
    lines += [
        (r.topic, str(r.partition), _cell(r.committed), _cell(r.end), _cell(lag), _cell(r.start))
        for r, lag in zip(ordered, lags, strict=True)
    ]
    total = str(sum(known)) if known or not ordered else "-"
    lines.append(("TOTAL", "", "", "", total, ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    return "\n".join(
        " ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)
