"""MLflow tracking: one run per training run, run groups, experiments.

Imports mia_core and pipelines.data.
"""
