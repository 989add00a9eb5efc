"""Reproducible benchmarks (`make bench`)."""
