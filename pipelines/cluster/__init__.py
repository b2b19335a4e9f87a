"""Connecting to Ray and the local multi-node cluster.

Imports mia_core, pipelines.data and pipelines.tracking.
"""
