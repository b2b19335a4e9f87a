"""Meta-training entry point: parse a config (+ ``key=value`` overrides), run training.

Usage::

    python ray_jobs/train.py --config configs/experiments/default.yaml run.steps=100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mia_core.config import ConfigError, load_config  # noqa: E402
from pipelines.train import run_training  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; a bad config exits with status 2 and a one-line reason."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", required=True, help="experiment YAML (see configs/experiments/)"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="ignore an existing last checkpoint"
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    run_training(cfg, resume=not args.no_resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
