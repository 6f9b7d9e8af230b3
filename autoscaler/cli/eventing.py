"""The event broker's commands: ``match`` (one Trigger, one event, explained), ``broker-ingress`` and
``dispatcher``."""

from __future__ import annotations

import json
import sys

from autoscaler import errors
from autoscaler.eventing import filters

EXIT_INVALID = 2

MATCH_HELP = """\
Reads {"trigger": <a Trigger manifest as JSON>, "event": <a structured-mode CloudEvent as JSON>} on stdin
and writes {"matches": true|false, "reason": "..."}: the filter code the dispatcher runs, with what decided.
An invalid Trigger exits with status 2 and lists every problem on stderr.
"""


def cmd_match() -> int:
    try:
        document = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        print(f"match: stdin is not JSON: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not isinstance(document, dict) or "trigger" not in document or "event" not in document:
        print('match: stdin must be {"trigger": {...}, "event": {...}}', file=sys.stderr)
        return EXIT_INVALID
    try:
        trigger = filters.parse_trigger(document["trigger"])
    except errors.TriggerError as exc:
        print("match: invalid Trigger:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    try:
        attributes = filters.event_attributes(document["event"])
    except ValueError as exc:
        print(f"match: {exc}", file=sys.stderr)
        return EXIT_INVALID
    verdict = filters.match(trigger, attributes)
    json.dump({"matches": verdict.matches, "reason": verdict.reason}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
