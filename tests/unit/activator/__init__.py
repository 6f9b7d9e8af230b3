"""Tests of the activator: routing, endpoints, buffer, proxy, CloudEvents, reporter, server."""
