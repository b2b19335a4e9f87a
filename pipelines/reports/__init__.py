"""Evaluation metrics, tables, figures and written reports.

Imports data, tracking, cluster and engine.
"""
