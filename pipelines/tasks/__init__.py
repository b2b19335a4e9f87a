"""Tasks (what to train: models, batches, losses, scores, reports) and the registry of method names.

Imports every room above codecs.
"""
