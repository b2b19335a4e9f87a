"""Store builders: ``python -m pipelines.data.builders <name> --out URL [options]``.

Each builder is one module exposing ``add_arguments(parser)`` and
``build(args, location) -> dict`` (a summary printed as JSON).
"""

BUILDERS = (
    "synthetic1d",
    "era5",
    "av_digits",
    "images",
    "volumes",
    "digits",
    "mnist",
    "mnist5k",
    "mnist10k",
    "cifar10",
)
