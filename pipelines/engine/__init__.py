"""The one Trainer and the one loop that run every task, in one process or on Ray Train.

Imports data, tracking and cluster; never names a task.
"""
