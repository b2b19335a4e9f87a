"""GPU resources of sweeps and of the local cluster, checked on a machine without a GPU.

Tune used to pack trials by CPUs alone and the local cluster started every node with
``--num-gpus=0``: a ``run.use_gpu`` trial then waited for a GPU forever.
"""

from __future__ import annotations

import pytest
import torch

from mia_core.config import ConfigError, load_config
from pipelines.cluster.local import LocalCluster, node_gpu_ids
from pipelines.studies.sweep_search import cluster_trial_slots, trial_slots


def _run(*overrides: str):
    return load_config("configs/experiments/default.yaml", list(overrides)).run


GPU_RUN = ("run.use_gpu=true", "run.num_workers=2", "run.cpus_per_worker=1")


def test_gpu_trials_are_packed_by_gpus_too():
    run = _run(*GPU_RUN)
    # 2 GPUs per trial: 5 GPUs hold 2 trials although 16 CPUs would hold 7
    assert cluster_trial_slots(run, {"CPU": 16.0, "GPU": 5.0}, 8) == 2
    assert cluster_trial_slots(run, {"CPU": 16.0, "GPU": 2.0}, 8) == 1
    # without run.use_gpu the GPUs are not counted (and not needed)
    cpu_run = _run("run.num_workers=2", "run.cpus_per_worker=1")
    assert cluster_trial_slots(cpu_run, {"CPU": 16.0}, 8) == 7


@pytest.mark.parametrize("gpus", [0.0, 1.0])
def test_gpu_trials_on_a_cluster_with_too_few_gpus_are_refused_in_one_line(gpus):
    cluster = {"CPU": 16.0} if gpus == 0 else {"CPU": 16.0, "GPU": gpus}
    with pytest.raises(ConfigError, match=r"run.use_gpu=true: a trial needs 2 GPU") as err:
        cluster_trial_slots(_run(*GPU_RUN), cluster, 4)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 200 and f"has {gpus:g}" in msg


def test_cpu_only_trial_slots_are_unchanged():
    assert trial_slots(0.5, 2.0, 4) == 2
    with pytest.raises(ConfigError, match="run.num_workers x run.cpus_per_worker"):
        trial_slots(2.0, 2.0, 1)


def test_local_cluster_shares_the_gpus_out_over_its_nodes():
    assert node_gpu_ids(0, 2) == [[], []]
    assert node_gpu_ids(1, 2) == [["0"], []]
    assert node_gpu_ids(4, 2) == [["0", "2"], ["1", "3"]]
    assert node_gpu_ids(2, 3, visible="4,6") == [["4"], ["6"], []]


def test_local_cluster_nodes_start_with_the_detected_gpus(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cluster = LocalCluster(num_nodes=2, root=str(tmp_path))
    gpus = cluster.node_gpus()
    assert gpus == [["0"], ["1"]]
    for name, share in zip(("head", "node1"), gpus, strict=True):
        cmd, env = cluster.start_command(name, [], share)
        assert "--num-gpus=1" in cmd and env["CUDA_VISIBLE_DEVICES"] == share[0]
    # an explicit count (--num-gpus of local_run) wins over the detected one
    assert LocalCluster(num_nodes=2, num_gpus=0).node_gpus() == [[], []]
    cmd, env = LocalCluster(num_gpus=0, root=str(tmp_path)).start_command("head", [], [])
    assert "--num-gpus=0" in cmd and env["CUDA_VISIBLE_DEVICES"] == ""
