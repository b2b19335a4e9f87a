"""Ray Train's storage for a run: where its checkpoints and run state live.

``run.storage_path`` is a folder every node sees (NFS/EFS, or this machine's disk for a
local cluster) or an ``s3://bucket/prefix`` URI; empty means ``<run.out_dir>/ray_results``.
Ray keeps the run under ``<storage>/<run.name>``, so a job submitted again with the same
name finds its checkpoints there and resumes. For S3 with a custom endpoint
(``data.endpoint_url`` or ``AWS_ENDPOINT_URL``, e.g. MinIO or a test server) a pyarrow
``S3FileSystem`` is built with that endpoint only: credentials are never put into it, so
every process resolves them from its own environment or instance role.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mia_core.config import Config


@dataclass(frozen=True)
class RayStorage:
    """A resolved storage location.

    Attributes:
        path: what ``RunConfig(storage_path=...)`` gets: an absolute path, an
            ``s3://`` URI, or ``bucket/prefix`` when ``filesystem`` is set.
        filesystem: a pyarrow filesystem for custom S3 endpoints, else ``None``.
    """

    path: str
    filesystem: Any = None

    @classmethod
    def of(cls, cfg: Config) -> RayStorage:
        """The storage of ``cfg`` (see the module docstring)."""
        raw = cfg.run.storage_path or str(Path(cfg.run.out_dir).resolve() / "ray_results")
        if not raw.startswith("s3://"):
            return cls(raw if "://" in raw else str(Path(raw).resolve()))
        endpoint = cfg.data.endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
        if not endpoint:
            return cls(raw)
        import pyarrow.fs

        url = urlparse(endpoint)
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        fs = pyarrow.fs.S3FileSystem(
            endpoint_override=url.netloc.rpartition("@")[2] or url.path,  # no user info
            scheme=url.scheme or "https",
            region=region or "us-east-1",
        )
        return cls(raw.removeprefix("s3://").rstrip("/"), fs)

    def _fs_and_path(self, name: str) -> tuple[Any, str]:
        import pyarrow.fs

        if self.filesystem is not None:
            return self.filesystem, f"{self.path}/{name}"
        if "://" in self.path:
            fs, base = pyarrow.fs.FileSystem.from_uri(self.path)
            return fs, f"{base.rstrip('/')}/{name}"
        return pyarrow.fs.LocalFileSystem(), str(Path(self.path) / name)

    def holds_run(self, name: str) -> bool:
        """Whether the storage keeps a run ``name`` (a later job resumes from it)."""
        import pyarrow.fs

        fs, path = self._fs_and_path(name)
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def delete_run(self, name: str) -> None:
        """Forget run ``name`` (its checkpoints and Ray's snapshot): a fresh start."""
        import pyarrow.fs

        fs, path = self._fs_and_path(name)
        if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            fs.delete_dir(path)


def copy_checkpoint_file(checkpoint: Any, name: str, dest: Path) -> Path:
    """Copy file ``name`` of a Ray ``Checkpoint`` to ``dest`` (atomically replaced)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    with checkpoint.as_directory() as folder:
        shutil.copyfile(Path(folder) / name, tmp)
    os.replace(tmp, dest)
    return dest
