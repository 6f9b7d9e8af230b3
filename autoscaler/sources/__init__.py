"""Backlog sources: one batched reader per broker kind.

``kafka/`` (OffsetFetch v8, ListOffsets), ``rabbitmq`` (management API, one GET per vhost and page of 500),
``redis`` (one pipelined round trip of XINFO GROUPS / XLEN per server) and ``nats`` (one /jsz per account).
Each reader answers for many targets of one server in a few requests per tick. Readers translate their
library's errors into ``autoscaler.errors`` and never import ``kube``, ``policy``, ``control``,
``activator`` or ``eventing``, nor each other; ``reading`` and ``http`` hold what the last three share.
"""
