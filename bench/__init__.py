"""Benchmarks, load generators and watchers for queue-autoscaler; results go to bench/results/."""
