"""Experiment harness: YAML suites -> runs -> MLflow -> reports (the `shapeprop-bench` CLI)."""
