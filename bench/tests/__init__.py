"""Tests of the benchmark tooling itself (run by the README's pytest with the service's tests)."""
