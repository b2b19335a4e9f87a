"""Latent codes per patch (issue 33): a CAVIA Functa on a patch store, entropy coded."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from test_patch_codec import NLAT, NLON, P, T, fields, write_store

from mia_core.config import load_config
from pipelines.codecs.codestore import stored_bytes
from pipelines.codecs.decode import Decoder
from pipelines.codecs.encode import run_encode
from pipelines.codecs.encode_spec import EncodeSpec
from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.rd_run import RDSpec, run_rd_report
from pipelines.data.stores import make_location
from pipelines.jobs import train

LATENT = 6


@pytest.fixture(scope="module")
def latent_patch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("patchlatent")
    store = write_store(str(root / "f.zarr"))
    cfg = load_config(
        "configs/experiments/latent_hadcm3.yaml",
        [
            f"data.store={store}", "data.modalities=[t2m, sp]", f"data.patch=[{P}, {P}]",
            "model.width=16", "model.depth=2", f"model.context_dim={LATENT}",
            "run.steps=2", "run.batch_size=4", "run.eval_every=2", "run.checkpoint_every=2",
            "run.eval_batch_size=4", "run.matmul_precision=highest",
            f"run.out_dir={root / 'runs'}",
        ],
    )  # fmt: skip
    res = train(cfg, local=True, log=lambda _s: None)
    return {"root": root, "store": store, "run_dir": str(res.run_dir)}


def test_each_patch_gets_an_entropy_coded_latent_and_decodes(latent_patch_run, tmp_path):
    out = tmp_path / "codes.zarr"
    spec = EncodeSpec(
        store=latent_patch_run["store"], checkpoint=latent_patch_run["run_dir"], out=str(out),
        steps=3, optimizer="rule", code_bits=4, batch_size=5, progress=False,
    )  # fmt: skip
    s = run_encode(spec, log=lambda _s: None, local=True)
    group = zarr.open_group(str(out), mode="r")
    attrs = group.attrs["mia_codes"]
    # one latent per variable per patch: the code is the patch's contexts
    assert attrs["mode"] == "context" and attrs["code_dim"] == 2 * LATENT
    assert group["codes"].shape == (T, 12, 2 * LATENT) and attrs["code_bits"] == 4
    # the size is what the codes take in storage (quantiser and metadata included)
    stored = stored_bytes(group, "codes")
    assert s.compression_codes == pytest.approx(attrs["raw_bytes_per_step"] * T / stored)
    ds = Decoder(make_location(str(out))).decode()
    truth = fields().sortby("latitude")
    for i, v in enumerate(["t2m", "sp"]):
        assert ds[v].shape == (T, NLAT, NLON) and np.isfinite(ds[v].values).all()
        lo, hi = float(truth[v].min()), float(truth[v].max())
        mse = (((ds[v].values - truth[v].values) / (hi - lo)) ** 2).mean(axis=(1, 2))
        np.testing.assert_allclose(mse, np.asarray(group["mse"][:, i]), rtol=2e-3)


def test_the_rate_distortion_study_refuses_patch_codes_in_one_line(latent_patch_run, tmp_path):
    out = tmp_path / "codes.zarr"
    spec = EncodeSpec(
        store=latent_patch_run["store"], checkpoint=latent_patch_run["run_dir"], out=str(out),
        steps=1, optimizer="rule", code_bits=4, progress=False,
    )  # fmt: skip
    run_encode(spec, log=lambda _s: None, local=True)
    with pytest.raises(EncodeError, match="does not read patch codes"):
        run_rd_report(RDSpec([str(out), str(out)], "patches"), log=lambda _s: None)
