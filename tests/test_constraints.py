"""The pinned dependency set: constraints match pyproject.toml, the environment and setup."""

from __future__ import annotations

import importlib.util
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"


def test_constraints_pin_every_direct_dependency_at_the_tested_version():
    pins = {}
    for line in (INFRA / "docker/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    direct = [*project["dependencies"], *(r for r in extras if not r.startswith("mia-inr"))]
    for req in map(Requirement, direct):
        name = canonicalize_name(req.name)
        hint = "regenerate: python infra/docker/freeze_constraints.py > .../constraints.txt"
        assert name in pins, f"{name} not pinned; {hint}"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert pins["torch"] == "2.13.0"
    setup = (REPO / "scripts/setup.sh").read_text()
    assert f'TORCH_VERSION="{pins["torch"]}"' in setup  # setup installs the pinned torch first
    assert pins["ray"] == metadata.version("ray")


def test_constraints_file_is_what_the_freeze_script_writes_for_this_environment(capsys):
    # the suite runs in the environment setup installed from the constraints: regenerating
    # them here must give the committed file (a dependency added to pyproject.toml without
    # regenerating, or a stale transitive pin, fails)
    spec = importlib.util.spec_from_file_location(
        "freeze_constraints", INFRA / "docker/freeze_constraints.py"
    )
    freeze = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(freeze)
    freeze.main([])
    fresh = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    text = (INFRA / "docker/constraints.txt").read_text().splitlines()
    committed = [ln for ln in text if ln and not ln.startswith("#")]
    hint = "regenerate: python infra/docker/freeze_constraints.py > infra/docker/constraints.txt"
    assert fresh == committed, hint
