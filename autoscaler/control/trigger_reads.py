"""Which consumer group a Kafka target reads: its kafka-group, or its Trigger's group on its Broker's topic.

A Trigger's reading joins the same batched read of the tick as every kafka-group target; a Trigger whose
Broker is not known (no such Trigger, no ``spec.broker``, the Trigger resource not served) is an error for
that target, so it holds its replicas like any unreadable lag.
"""

from __future__ import annotations

from autoscaler import errors
from autoscaler.control.ports import GroupRead, TriggerDirectory
from autoscaler.model import TargetKey, broker_topic, trigger_consumer_group
from autoscaler.policy.annotations import ScalingPolicy


def group_read(
    key: TargetKey, policy: ScalingPolicy, triggers: TriggerDirectory | None
) -> GroupRead | errors.KafkaError | None:
    """The group (and topics) to read for ``key``; None for a target without Kafka."""
    if policy.trigger is None:
        return None if policy.kafka_group is None else GroupRead(policy.kafka_group, policy.kafka_topics)
    broker = None if triggers is None else triggers.broker_of(key.namespace, policy.trigger)
    if broker is None:
        return errors.KafkaError(
            f"Trigger {key.namespace}/{policy.trigger} not found or without spec.broker (is it applied, and "
            "are the eventing.knative.dev Trigger resources installed?)"
        )
    return GroupRead(
        trigger_consumer_group(key.namespace, policy.trigger), (broker_topic(key.namespace, broker),)
    )
