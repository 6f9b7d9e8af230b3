"""Connection names a target's annotations use, checked against the connections the controller knows.

Pure: the controller passes the names of its connections file (the `default` Kafka connection included when
``--kafka-bootstrap`` supplies it); an annotation naming a connection that does not exist is an
InvalidAnnotations problem, so the target is left untouched and told why, rather than read and held.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from autoscaler.errors import AnnotationProblem
from autoscaler.model import PREFIX
from autoscaler.policy.annotations import ScalingPolicy

DEFAULT = "default"


def unknown(
    policy: ScalingPolicy, annotations: Mapping[str, str], known: Mapping[str, Collection[str]]
) -> tuple[AnnotationProblem, ...]:
    """A problem for each connection the policy uses that ``known[kind]`` lacks.

    Kafka is checked only where the ``kafka-connection`` annotation names a connection: an unset one is
    `default`, which ``--kafka-bootstrap`` or a ``kafka-bootstrap`` annotation may stand in for (and whose
    absence the loop reports as missing data). The other kinds have no such stand-in: their `default` must
    exist too.
    """
    used: list[tuple[str, str, bool]] = []  # kind, name, named by an annotation
    if policy.uses_kafka and PREFIX + "kafka-connection" in annotations:
        used.append(("kafka", policy.kafka_connection, True))
    sources = policy.sources
    for kind, source in (("rabbitmq", sources.rabbitmq), ("redis", sources.redis), ("nats", sources.nats)):
        if source is not None:
            used.append((kind, source.connection, PREFIX + f"{kind}-connection" in annotations))
    problems = []
    for kind, name, named in used:
        names = known.get(kind, ())
        if name in names:
            continue
        listed = ", ".join(sorted(names)) or "none"
        problems.append(
            AnnotationProblem(
                f"{kind}-connection",
                name if named else f"{name} (the default)",
                f"a {kind} connection of the connections file; it has: {listed}",
            )
        )
    return tuple(problems)
