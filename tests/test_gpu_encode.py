"""Encoder actors on the GPU path: their Ray resources and where ``auto`` is resolved.

Ray sets ``CUDA_VISIBLE_DEVICES=""`` in actors that reserve no GPU, and a CPU-only head
node must not decide the device of actors on GPU nodes. Proven on CPU: the resources are
a pure function of the spec and the cluster's GPU count, and a driver that (wrongly)
believes it has CUDA no longer sends ``cuda`` to actors that have none.
"""

from __future__ import annotations

import pytest
import torch
from test_encode import T, encode, meta_run, options  # noqa: F401

from mia_core.config import ConfigError
from pipelines.codecs import encode as encode_mod
from pipelines.codecs.encode_spec import EncodeSpec, actor_resources, load_encode_spec
from pipelines.codecs.encoder import encode_device
from pipelines.codecs.meta_model import EncodeError


def _spec(**kw) -> EncodeSpec:
    return EncodeSpec(store="s.zarr", checkpoint="run", out="c.zarr", **kw)


@pytest.mark.parametrize(
    "kw, gpus, expected",
    [
        ({}, 4, {"num_cpus": 0.5}),  # device=cpu: no GPU reserved even where there are some
        ({"device": "cuda"}, 1, {"num_cpus": 0.5, "num_gpus": 1.0}),
        ({"device": "cuda", "gpus_per_actor": 0.25}, 1, {"num_cpus": 0.5, "num_gpus": 0.25}),
        ({"device": "auto", "gpus_per_actor": 0.5}, 2, {"num_cpus": 0.5, "num_gpus": 0.5}),
        ({"device": "auto"}, 0, {"num_cpus": 0.5}),  # auto on a CPU cluster: CPU actors
    ],
)
def test_actor_resources_for_gpu_configs(kw, gpus, expected):
    assert actor_resources(_spec(**kw), gpus) == expected


def test_gpu_actors_on_a_cluster_without_one_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"encode.device=cuda but the Ray cluster has no GPU"):
        actor_resources(_spec(device="cuda"), 0)
    with pytest.raises(ConfigError, match=r"encode.gpus_per_actor=2 exceeds .* 1 GPU"):
        actor_resources(_spec(device="cuda", gpus_per_actor=2.0), 1)
    with pytest.raises(ConfigError, match="gpus_per_actor"):
        load_encode_spec(
            None,
            ["encode.store=s", "encode.out=o", "encode.checkpoint=r", "encode.gpus_per_actor=0"],
        )


def test_map_batches_reserves_the_gpus_of_a_gpu_config(ray_session, monkeypatch):
    import ray
    import ray.data

    seen = {}

    class Stop(Exception):
        pass

    def spy(self, fn, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 2.0})
    monkeypatch.setattr(ray.data.Dataset, "map_batches", spy)
    spec = _spec(device="auto", gpus_per_actor=0.5, concurrency=4)
    with pytest.raises(Stop):
        next(encode_mod._run_units({}, [(0, 4), (4, 8)], spec, local=False))
    assert seen["num_gpus"] == 0.5 and seen["num_cpus"] == 0.5
    assert seen["compute"].min_size == 2


def test_encode_device_is_resolved_where_it_encodes():
    assert encode_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert encode_device("auto") == torch.device("cpu")
        with pytest.raises(EncodeError, match="encode.device=cuda but this encoder sees no CUDA"):
            encode_device("cuda")


@pytest.mark.integration
def test_auto_is_resolved_in_the_actors_not_on_the_driver(
    meta_run,  # noqa: F811
    tmp_path,
    ray_session,
    monkeypatch,
):
    """The driver sees a GPU, the actors (CPU-only here) do not: they encode on CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    s = encode(options(meta_run, tmp_path / "codes.zarr", device="auto"), local=False)
    assert s.done == T
