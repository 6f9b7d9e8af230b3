"""Tests of logging set-up and metrics."""
