"""The ``trigger`` annotation: the name of a Trigger (same namespace) whose backlog a Deployment works off.

Pure. The Trigger's consumer group (``knative-trigger-<namespace>-<name>``) and its Broker's topic
(``knative-broker-<namespace>-<broker>``) are resolved by the control loop, which knows the Trigger's
``spec.broker``; here only the name and its conflicts with the other ways of naming a consumer group.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from autoscaler.errors import AnnotationProblem
from autoscaler.model import PREFIX

KEY = "trigger"
ALLOWED = (
    "a Trigger name (DNS-1123 subdomain): at most 253 lowercase letters, digits, '-' and '.', starting and "
    "ending with a letter or digit"
)
# Keys that name the consumer group or its topics themselves: the Trigger names both.
EXCLUSIVE = ("kafka-group", "kafka-topics")

_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")


def valid_name(text: str) -> bool:
    return len(text) <= 253 and _NAME.fullmatch(text) is not None


def conflicts(annotations: Mapping[str, str]) -> list[AnnotationProblem]:
    """A problem for each of kafka-group / kafka-topics set together with trigger."""
    if PREFIX + KEY not in annotations:
        return []
    return [
        AnnotationProblem(
            key,
            annotations[PREFIX + key],
            f"cannot be set together with trigger ({annotations[PREFIX + KEY]}): the Trigger names the "
            "consumer group and the topic",
        )
        for key in EXCLUSIVE
        if PREFIX + key in annotations
    ]
