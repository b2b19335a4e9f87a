"""Stores, builders, the Ray Data source and episode streams.

Imports mia_core only: no other room of pipelines.
"""
