"""Results files (studies, reports, benchmarks): read and replaced only when they are ours.

A results JSON is merged into (an entry per dataset or study) or rewritten by the command
that owns it. An existing path that is a folder, or a file that is not a JSON object (a
user's notes, a CSV), is not ours: it is refused in one line instead of being replaced.
Writes are atomic (a temporary sibling renamed over the file), so a failure or a full disk
leaves the previous results as they were.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipelines.data.stores.errors import DiskFull, StoreError, is_disk_full


def read_results(path: str | Path, default: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON object at ``path`` (``default`` or ``{}`` when there is no file).

    Raises:
        StoreError: ``path`` is a folder or a file that is not a JSON object.
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: exists and is a folder, not a results JSON file")
    if not path.exists():
        return dict(default or {})
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(
            f"{path}: exists and is not a results JSON file ({type(err).__name__}); "
            "choose another path or move the file"
        ) from err
    if not isinstance(data, dict):
        raise StoreError(f"{path}: holds JSON that is not an object; choose another path")
    return data


def write_results(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, refusing a path that is not a results file."""
    path = Path(path)
    if path.exists():
        read_results(path)  # refuses what is not ours
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise DiskFull(path.parent, len(text.encode()), path.name) from err
        raise
    return path
