"""Benchmarks of the monitoring concurrency models."""
