"""The Kafka backlog source: batched OffsetFetch v8, FindCoordinator v4 and ListOffsets reads."""
