"""Meta-training job: parse a config (+ ``key=value`` overrides) and run it on Ray Train.

Usage (local Ray, or inside ``ray job submit``)::

    python ray_jobs/train.py --config configs/experiments/default.yaml run.steps=100
    python ray_jobs/train.py --config ... --local     # single process, no Ray
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mia_core.config import ConfigError, load_config  # noqa: E402


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
    parser.add_argument("--local", action="store_true", help="single process without Ray")
    parser.add_argument(
        "--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)"
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.local:
        from pipelines.engine.loop import run_training

        run_training(cfg, resume=not args.no_resume)
    else:
        from pipelines.engine.ray_train import run_ray_training

        run_ray_training(cfg, address=args.address, resume=not args.no_resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
