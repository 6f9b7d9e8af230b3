"""The event broker: a Kafka-backed Broker and Trigger (Knative Eventing API, broker class queue-autoscaler).

``filters`` (pure) parses Triggers and matches events; ``delivery`` (pure) holds the retry schedule and the
offset-commit bookkeeping; ``ingress`` writes events to a Broker's topic; ``dispatcher`` delivers each
Trigger's matching events; ``reconcile`` writes Broker and Trigger status.
"""
