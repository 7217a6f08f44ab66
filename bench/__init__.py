"""Benchmarks (not shipped). A package so bench/conftest.py never shadows tests/conftest.py."""
