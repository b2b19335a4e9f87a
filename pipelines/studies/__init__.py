"""Sweeps, ablations and reproduction studies built from many training runs.

Imports every other room.
"""
