"""A Decision's numbers as one English sentence: what each source saw, then what the count does and why.

Pure: the words of logs, Events and ``queue-autoscaler decide``'s ``reason``. Each source kind renders its
own sizing and activity phrases; the rule renders the action.
"""

from __future__ import annotations

from datetime import timedelta

from autoscaler.model import Cap, Decision, Rule, Source, SourceReading


def explain(decision: Decision) -> str:
    """``"<what each source saw>; <what the count does>."``"""
    situation = "; ".join(_sizing(r) for r in decision.readings) or "no scaling source"
    return f"{situation}; {_action(decision)}."


# The other backlog sources: what their backlog is called, and their threshold keys.
_BACKLOG_WORDS = {
    Source.RABBITMQ: ("rabbitmq messages", "messages-per-replica", "activation-messages"),
    Source.REDIS: ("redis entries", "entries-per-replica", "activation-entries"),
    Source.NATS: ("nats pending", "pending-per-replica", "activation-pending"),
}


def _sizing(reading: SourceReading) -> str:
    if reading.source is Source.KAFKA:
        return _kafka_sizing(reading)
    if reading.source in _BACKLOG_WORDS:
        what, per_replica, _ = _BACKLOG_WORDS[reading.source]
        if reading.error is not None:
            return f"{what} unreadable ({reading.error})"
        return (
            f"{what} {reading.backlog} at {per_replica} {reading.per_replica} "
            f"needs {_plural(reading.needed, 'replica')}"
        )
    if reading.error is not None:
        return reading.error
    return (
        f"concurrency {reading.backlog} at concurrency-per-replica {reading.per_replica} "
        f"needs {_plural(reading.needed, 'replica')}"
    )


def _kafka_sizing(reading: SourceReading) -> str:
    if reading.error is not None:
        return f"lag unreadable ({reading.error})"
    partitions = _plural(reading.partitions, "partition")
    text = f"lag {reading.backlog} across {partitions}"
    persistent = reading.backlog - reading.sizing_backlog
    if persistent:
        text += f" ({persistent} of it persistent, not counted for sizing)"
    rate = reading.rate
    if (
        rate is not None
        and rate.needed is not None
        and rate.arrival is not None
        and rate.per_replica is not None
    ):
        text += (
            f", arriving {rate.arrival:.1f}/s, {rate.per_replica:.1f}/s per ready replica: drain-within "
            f"{duration(rate.drain_within)} needs {_plural(reading.needed, 'replica')}"
        )
        if rate.rising:
            text += " (arrivals rising: no scale-down)"
    else:
        text += f" at lag-per-replica {reading.per_replica} needs {_plural(reading.needed, 'replica')}"
        if rate is not None:
            text += f" (drain-within {duration(rate.drain_within)}: rates not measured yet)"
    if reading.cap is Cap.EVEN_DISTRIBUTION:
        if reading.replicas != reading.needed:
            text += f", {reading.replicas} to spread {partitions} evenly"
    elif reading.cap is not None and reading.replicas < reading.needed:
        text += f", capped at {reading.replicas} ({reading.cap})"
    return text


def _activity(decision: Decision) -> str:
    return " and ".join(_source_activity(r) for r in decision.readings if r.readable)


def _source_activity(reading: SourceReading) -> str:
    if reading.source is Source.KAFKA:
        sign = ">" if reading.active else "<="
        return f"activation lag {reading.backlog} {sign} activation-lag {reading.activation}"
    if reading.source in _BACKLOG_WORDS:
        what, _, activation = _BACKLOG_WORDS[reading.source]
        sign = ">" if reading.active else "<="
        return f"{what} {reading.backlog} {sign} {activation} {reading.activation}"
    if reading.backlog == 0 and reading.active:
        return (
            f"concurrency 0 now but {_plural(reading.started, 'request')} started "
            f"(peak {reading.peak}) since the last reading"
        )
    return f"concurrency {reading.backlog} {'>' if reading.active else '='} 0"


def _action(decision: Decision) -> str:
    action = _unclamped_action(decision)
    if decision.rule is Rule.CLAMP_MIN:
        action += f", raised to min-replicas {decision.desired_replicas}"
    elif decision.rule is Rule.CLAMP_MAX:
        action += f", limited to max-replicas {decision.desired_replicas}"
    return action


def _unclamped_action(decision: Decision) -> str:
    current, proposed, rule = decision.current_replicas, decision.proposed, decision.proposed_rule
    if rule is Rule.PAUSED_REPLICAS:
        return f"paused-replicas is {proposed}, so the count is {proposed} whatever the load"
    if rule is Rule.PAUSED:
        return f"paused, so the count stays at {current}"
    if rule is Rule.FALLBACK:
        return f"raising {current} to fallback-replicas {proposed} until it can be read"
    if rule is Rule.HOLD_UNREADABLE:
        return f"holding {current}: never scaling down on missing data"
    if rule in (Rule.ACTIVATE, Rule.SCALE_UP) and not decision.all_readable:
        activity = _activity(decision)
        return f"{activity}: scaling up from {current} to {proposed} on the sources that could be read"
    if rule is Rule.ACTIVATE:
        return f"{_activity(decision)}: scaling from 0 to {proposed}"
    if rule is Rule.SCALE_UP:
        return f"scaling up from {current} to {proposed}"
    if rule is Rule.SCALE_TO_ZERO:
        idle_for = decision.idle_for or timedelta(0)
        to_zero = decision.scale_to_zero_after or timedelta(0)
        return (
            f"{_activity(decision)} for {duration(idle_for)} (scale-to-zero-after {duration(to_zero)}): "
            f"scaling from {current} to 0"
        )
    if current == 0:
        return f"{_activity(decision)}: staying at 0"
    window = duration(decision.scale_down_window)
    idle_note = ""
    if decision.idle_for is not None and decision.scale_to_zero_after is not None:
        idle_note = (
            f", idle for {duration(decision.idle_for)} of scale-to-zero-after "
            f"{duration(decision.scale_to_zero_after)}"
        )
    if rule is Rule.SCALE_DOWN_WINDOW:
        return (
            f"scaling down from {current} to {proposed}, the highest count within scale-down-window "
            f"{window}{idle_note}"
        )
    highest = decision.window_max
    return f"keeping {current} (highest count within scale-down-window {window} is {highest}){idle_note}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def duration(value: timedelta) -> str:
    """5m, 1m30s, 500ms, 4m59.5s: the annotation syntax where it fits."""
    ms = max(0, round(value / timedelta(milliseconds=1)))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{rest / 1000:g}s" if rest else "")
