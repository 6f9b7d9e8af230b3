"""A real single-machine stack for queue-autoscaler's integration tests, benchmarks and demo.

Kafka (KRaft, one node) from Maven Central, etcd + kube-apiserver + kube-controller-manager built from the Go
module proxy, and a local kubelet (``devstack.kubelet``) that runs pods as real processes, each in its own
network namespace on a host bridge so that its address is valid in EndpointSlices.
"""
