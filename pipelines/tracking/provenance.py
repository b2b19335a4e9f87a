"""Where a run comes from: the ``mia-inr`` command line and the project's git commit.

Every MLflow run the project creates carries the tags :func:`source_tags` returns:

- ``mlflow.source.name``: the command that started it, ``mia-inr train --config ...``
  (or the script, ``ray_jobs/train.py ...``), credentials in URLs and secret-looking
  ``key=value`` overrides hidden;
- ``mlflow.source.type``: ``LOCAL``;
- ``mlflow.source.git.commit``: ``git rev-parse HEAD`` of the project checkout this code
  runs from, or ``MIA_GIT_COMMIT`` when set (a job submitted to a cluster runs from
  Ray's copy of the working directory, which has no ``.git``: submit it as
  ``env MIA_GIT_COMMIT=$(git rev-parse HEAD) mia-inr train ...``); left out when neither
  is known.

They are resolved once, in the process that runs the command (the driver), and kept in
MLflow's own ``MLFLOW_RUN_CONTEXT`` variable (:func:`install_run_context`): every run that
MLflow's fluent API starts in this process gets them (MLflow applies that variable's tags
over its own guesses, which under Ray name Ray's worker file), and
:func:`pipelines.cluster.connect.init_ray` forwards the variable to Ray's workers, so the
runs they start record the driver's command and commit too.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mia_core.config.secrets import REDACTED, is_secret_key, redact_url

RUN_CONTEXT_ENV = "MLFLOW_RUN_CONTEXT"  # MLflow's SystemEnvironmentContext reads it
COMMIT_ENV = "MIA_GIT_COMMIT"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
GIT_COMMIT = "mlflow.source.git.commit"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAX_SOURCE_CHARS = 4000  # MLflow tag values hold 8000 characters
RAY_WORKER = "<Ray worker: the driver's command was not passed down>"
_PLAIN = re.compile(r"[\w@%+=:,./*\[\]-]+")


def _redacted(args: Sequence[str]) -> list[str]:
    """``args`` without credentials: secret-looking ``key=value`` / ``--key value``, URLs."""
    out: list[str] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        flag = out[-1] if out and not arg.startswith("-") else ""
        if flag.startswith("-") and "=" not in flag and is_secret_key(flag.lstrip("-")):
            out.append(REDACTED)  # the value of --token, --password ...
        elif sep and is_secret_key(key.lstrip("-")):
            out.append(f"{key}={REDACTED}")
        elif sep and "://" in value:
            out.append(f"{key}={redact_url(value)}")
        else:
            out.append(redact_url(arg))
    return out


def _shell(arg: str) -> str:
    """``arg`` quoted for a shell where needed (``***`` of a redacted value left bare)."""
    return arg if arg and _PLAIN.fullmatch(arg) else shlex.quote(arg)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command of this process as a shell line, without credentials.

    ``mia-inr`` sets ``argv[0]`` to ``"mia-inr <command>"`` (:mod:`ray_jobs.cli`) and
    keeps the command word in ``argv[1]``; it is shown once.

    Args:
        argv: the arguments (default ``sys.argv``).
    """
    args = list(sys.argv if argv is None else argv) or ["<console>"]
    head, rest = args[0], args[1:]
    if "ray/_private/workers" in head.replace(os.sep, "/"):
        return RAY_WORKER
    if head.startswith("mia-inr ") and rest and rest[0] == head.split()[1]:
        rest = rest[1:]
    line = " ".join([head, *(_shell(a) for a in _redacted(rest))])
    return line if len(line) <= MAX_SOURCE_CHARS else line[: MAX_SOURCE_CHARS - 3] + "..."


@functools.lru_cache(maxsize=4)
def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """``git rev-parse HEAD`` of the checkout whose top folder is ``root``, else ``None``.

    A folder that is not the top of a git checkout (an installed package, Ray's copy of
    the working directory, even inside another repository) gives ``None``.
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 2 or Path(out[0]).resolve() != Path(root).resolve():
        return None
    return out[1]


def _inherited() -> dict[str, str]:
    """The tags of ``MLFLOW_RUN_CONTEXT`` (set by this process or passed down to it)."""
    raw = os.environ.get(RUN_CONTEXT_ENV, "")
    try:
        tags = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def source_tags(argv: Sequence[str] | None = None) -> dict[str, str]:
    """The provenance tags of a run started by this process (see the module docstring).

    Tags passed down in ``MLFLOW_RUN_CONTEXT`` (a Ray worker's, from its driver) win over
    what this process would find itself.
    """
    tags = {SOURCE_NAME: command_line(argv), SOURCE_TYPE: "LOCAL"}
    commit = os.environ.get(COMMIT_ENV, "").strip() or git_commit()
    if commit:
        tags[GIT_COMMIT] = commit
    inherited = _inherited()
    if inherited.get(SOURCE_NAME):
        tags.pop(GIT_COMMIT, None)  # the driver's commit, or none where it had none
    return {**tags, **inherited}


def install_run_context() -> dict[str, str]:
    """Put :func:`source_tags` into ``MLFLOW_RUN_CONTEXT`` (once); returns the tags.

    Idempotent: tags already there (passed down, or another provider's) are kept.
    """
    tags = source_tags()
    os.environ[RUN_CONTEXT_ENV] = json.dumps(tags, sort_keys=True)
    return tags


def provenance_env() -> dict[str, str]:
    """What a driver forwards to Ray's workers: ``{"MLFLOW_RUN_CONTEXT": <tags>}``."""
    install_run_context()
    return {RUN_CONTEXT_ENV: os.environ[RUN_CONTEXT_ENV]}


__all__ = [
    "COMMIT_ENV",
    "RUN_CONTEXT_ENV",
    "command_line",
    "git_commit",
    "install_run_context",
    "provenance_env",
    "source_tags",
]
