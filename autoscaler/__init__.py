"""queue-autoscaler: scale Kubernetes worker Deployments on queue depth, to and from zero."""

__version__ = "0.1.0"
