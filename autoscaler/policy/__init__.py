"""policy layer of queue-autoscaler (see DESIGN.md)."""
