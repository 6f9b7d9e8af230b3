"""Backlog sources: one batched reader per broker kind (kafka/, and later rabbitmq, redis, nats).

Each reader answers for many targets of one server in a few requests per tick. Readers translate their
library's errors into ``autoscaler.errors`` and never import ``kube``, ``policy``, ``control``,
``activator`` or ``eventing``.
"""
