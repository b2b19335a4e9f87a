"""Write the pinned versions of the project's dependency closure as a pip constraints file.

Reads the *installed* environment (the venv the tests pass in), walks ``mia-inr``'s
requirements with the requested extras recursively, evaluating environment markers for this
interpreter, and prints ``name==version`` for every distribution reached; ``pip freeze``
filtered to what the project needs. The project itself and the torch build suffix
(``+cpu``) are left out: torch comes from the PyTorch index with its own build arg.

    python infra/docker/freeze_constraints.py > infra/docker/constraints.txt
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(root: str, extras: list[str]) -> dict[str, str]:
    """Canonical name -> installed version for ``root[extras]`` and everything it needs.

    Raises:
        metadata.PackageNotFoundError: a required distribution is not installed.
    """
    seen: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if (key, wanted) in done:
            continue
        done.add((key, wanted))
        dist = metadata.distribution(name)
        seen[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    seen.pop(canonicalize_name(root), None)
    return seen


def main(argv: list[str] | None = None) -> int:
    """Print the constraints file (``--extras data,dev`` by default) to stdout."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--project", default="mia-inr")
    p.add_argument(
        "--extras", default="data,dev", help="comma-separated extras of the project"
    )
    args = p.parse_args(argv)
    pins = closure(args.project, [e for e in args.extras.split(",") if e])
    py = ".".join(map(str, sys.version_info[:2]))
    print(f"# Written by infra/docker/freeze_constraints.py (extras: {args.extras}, Python {py}).")
    print("# Pins of the environment the test suite passed in; regenerate after upgrades.")
    for key in sorted(pins):
        version = pins[key].split("+")[0]
        print(f"{key}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
