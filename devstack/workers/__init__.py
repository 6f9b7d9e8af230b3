"""Small worker programs the devstack runs as pods in tests, benchmarks and the demo."""
