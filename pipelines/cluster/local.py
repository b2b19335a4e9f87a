"""A local multi-node Ray cluster on one machine: a head and raylets joining it on 127.0.0.1.

``ray start --head`` plus ``ray start --address 127.0.0.1:<port>`` for every further node
gives separate raylets (own object store, own workers, own temp dir) that Ray schedules
across exactly as on a real cluster: the job's working directory is shipped to each node,
Ray Data read tasks and Ray Train workers are placed per node, and checkpoints go to a
storage path every node reaches (here: one directory of the shared file system).

Every ``ray start`` runs in its own session (``setsid``), and :meth:`LocalCluster.stop`
ends exactly the processes of those sessions (GCS, raylets, dashboard, workers, job
driver). ``ray stop`` is never used: it kills every Ray process of the machine, including
other users' clusters and test sessions.

``pipelines/cluster/local_run.py`` runs the training job across such a cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

_GIVEN: set[int] = set()  # ports handed out by this process (the OS may offer one twice)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the OS picks it), never one given out before.

    Ray refuses to start when two of its components get the same port, which happens when
    the OS offers a just-closed port again.
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError("no fresh free TCP port on 127.0.0.1 after 100 tries")


def ray_cli() -> str:
    """The ``ray`` executable of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``, read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) != sid:
                    continue
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (ProcessLookupError, PermissionError, FileNotFoundError, IndexError):
                continue
            if state != "Z":
                pids.append(int(entry))
    return pids


def node_gpu_ids(total: int, num_nodes: int, visible: str | None = None) -> list[list[str]]:
    """``total`` GPUs shared out over ``num_nodes`` nodes, head first, none given twice.

    Args:
        total: GPUs to hand out.
        num_nodes: Ray nodes including the head.
        visible: this machine's ``CUDA_VISIBLE_DEVICES`` (ids handed out from it), or
            ``None`` for ``0..total-1``.
    """
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    ids = ids[:total] if visible else [str(i) for i in range(total)]
    return [ids[i::num_nodes] for i in range(num_nodes)]


@dataclass
class LocalCluster:
    """A head and ``num_nodes - 1`` raylets joining it on 127.0.0.1.

    Attributes:
        num_nodes: Ray nodes including the head.
        cpus_per_node: logical CPUs each node advertises (``--num-cpus``).
        object_store_mb: object store size per node.
        root: directory for the nodes' temp dirs and logs; a short new ``/tmp`` directory
            if empty (Unix socket paths under it must stay below 107 characters).
        env: extra environment for every node's ``ray start`` (reaches the job driver,
            tasks and actors, which inherit it; the place for S3 credentials, which never go
            into a runtime_env: see :mod:`pipelines.cluster.connect`).
        num_gpus: GPUs of the whole cluster, shared out over the nodes (each node sees
            only its own through ``CUDA_VISIBLE_DEVICES``); ``None``: this machine's
            (``torch.cuda.device_count()``). ``0`` before made GPU trials wait forever.
    """

    num_nodes: int = 2
    cpus_per_node: int = 1
    object_store_mb: int = 128
    root: str = ""
    env: dict[str, str] = field(default_factory=dict)
    num_gpus: int | None = None
    gcs_port: int = 0
    dashboard_port: int = 0
    sessions: list[int] = field(default_factory=list)

    @property
    def gcs_address(self) -> str:
        """``127.0.0.1:<port>`` of the head's GCS (what ``ray start --address`` takes)."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Job submission / state API address of the head."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def node_env(self) -> dict[str, str]:
        """Environment of every ``ray start``: this one (credentials included) plus ``env``.

        This interpreter comes first on PATH; Ray's auth tokens are disabled.
        """
        env = dict(os.environ)
        # Ray's own helpers (e.g. Train's placement group cleaner) look the cluster up by
        # address="auto", which fails when the machine runs several clusters.
        env["RAY_ADDRESS"] = self.gcs_address
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("RAY_AUTH_MODE", "disabled")
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env.update(self.env)
        return env

    def node_gpus(self) -> list[list[str]]:
        """Per node (head first): the GPU ids it gets (see :func:`node_gpu_ids`)."""
        total = self.num_gpus
        if total is None:
            import torch

            total = torch.cuda.device_count()
        return node_gpu_ids(total, self.num_nodes, os.environ.get("CUDA_VISIBLE_DEVICES"))

    def start_command(
        self, name: str, args: list[str], gpus: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        """The ``ray start`` command line and environment of node ``name`` with ``gpus``."""
        temp = Path(self.root) / name
        env = {**self.node_env(), "CUDA_VISIBLE_DEVICES": ",".join(gpus)}  # its share only
        cmd = [
            ray_cli(),
            "start",
            *args,
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.cpus_per_node}",
            f"--num-gpus={len(gpus)}",
            f"--object-store-memory={self.object_store_mb * 1024**2}",
            f"--temp-dir={temp}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--disable-usage-stats",
        ]
        return cmd, env

    def _ray_start(self, name: str, args: list[str], gpus: list[str]) -> None:
        (Path(self.root) / name).mkdir(parents=True, exist_ok=True)
        cmd, env = self.start_command(name, args, gpus)
        log = Path(self.root) / f"{name}.start.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            # The session id is the pid of `ray start`; its daemons keep it after it exits.
            self.sessions.append(proc.pid)
            rc = proc.wait(timeout=120)
        if rc != 0:
            raise RuntimeError(f"ray start for {name} failed (rc={rc}); see {log}")

    def start(self, timeout: float = 90.0) -> LocalCluster:
        """Start the head, join the other nodes and wait until all are alive."""
        if not self.root:
            self.root = tempfile.mkdtemp(prefix="mia-lc-", dir="/tmp")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        gpus = self.node_gpus()
        self._ray_start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
            gpus[0],
        )
        for i in range(1, self.num_nodes):
            self._ray_start(f"node{i}", [f"--address={self.gcs_address}"], gpus[i])
        self.wait_for_nodes(timeout)
        return self

    def nodes(self) -> list[dict]:
        """Alive nodes as ``{"node_id", "is_head", "cpus"}`` from the state API."""
        from ray.util.state import list_nodes

        out = []
        for n in list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")]):
            out.append(
                {
                    "node_id": n.node_id,
                    "is_head": bool(n.is_head_node),
                    "cpus": float(n.resources_total.get("CPU", 0)),
                    "gpus": float(n.resources_total.get("GPU", 0)),
                }
            )
        return out

    def wait_for_nodes(self, timeout: float) -> list[dict]:
        """Block until ``num_nodes`` nodes are alive; raise with the last count otherwise."""
        deadline = time.time() + timeout
        alive: list[dict] = []
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2)
                alive = self.nodes()
                if len(alive) >= self.num_nodes:
                    return alive
            except Exception:  # dashboard still starting
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"only {len(alive)} of {self.num_nodes} Ray nodes alive after {timeout:.0f} s "
            f"(logs under {self.root})"
        )

    def cpu_seconds(self) -> float:
        """CPU time (user + system, reaped children included) of the cluster's processes.

        Independent of how busy the machine is, unlike wall time; processes that already
        exited count only if their parent reaped them (e.g. a finished job driver).
        """
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in (p for sid in self.sessions for p in session_pids(sid)):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        return total / tick

    def stop(self, grace: float = 5.0, remove_root: bool = False) -> int:
        """End every process of the sessions this cluster started.

        Args:
            grace: seconds to wait after SIGTERM (and again after SIGKILL).
            remove_root: delete the temp/log directory once nothing runs in it.

        Returns:
            How many processes were still alive at the end (0 when all are gone).
        """
        pids = [p for sid in self.sessions for p in session_pids(sid)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + grace
            while time.time() < deadline and any(session_pids(s) for s in self.sessions):
                time.sleep(0.2)
            pids = [p for sid in self.sessions for p in session_pids(sid)]
            if not pids:
                break
        if remove_root and not pids and self.root:
            shutil.rmtree(self.root, ignore_errors=True)
        return len(pids)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
