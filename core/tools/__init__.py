"""Command line, doctor and benchmarks."""
