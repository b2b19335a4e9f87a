"""Batch encoding and decoding of stores with meta-trained models.

Imports data, tracking, cluster, engine, reports and tasks.
"""
