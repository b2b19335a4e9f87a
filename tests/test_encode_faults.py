"""Batch encoding under faults: a crash after writing codes, a failed or killed Ray actor."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr
from test_encode import CHUNK, PSNR_FLOOR, T, encode, meta_run, options  # noqa: F401

from pipelines.codecs.codestore import pending_units
from pipelines.codecs.decode import Decoder
from pipelines.codecs.meta_model import EncodeError
from pipelines.data.stores import StoreError, make_location


@pytest.mark.fault
def test_interrupted_encode_resumes_every_step_exactly_once(meta_run, tmp_path):  # noqa: F811
    out = tmp_path / "codes.zarr"
    with pytest.raises(RuntimeError, match="injected fault"):
        encode(options(meta_run, out), fault_at=5)
    group = zarr.open_group(str(out), mode="r")
    done = np.asarray(group["done"][...]).astype(bool)
    # Unit 0:4 finished; 4:8 wrote its codes but crashed before publishing them.
    assert done[:4].all() and not done[4:].any()
    assert np.isfinite(group["psnr"][4:8]).all()
    assert pending_units(done, CHUNK, 0, T) == [(4, 8), (8, 12)]
    with pytest.raises(EncodeError, match="not encoded yet"):
        Decoder(make_location(str(out))).decode(slice(0, 6))

    s = encode(options(meta_run, out))
    assert (s.skipped, s.encoded, s.done) == (4, T - 4, T)
    again = encode(options(meta_run, out))
    assert (again.skipped, again.encoded) == (T, 0)

    # Same codes as an uninterrupted run: resuming changes nothing.
    clean = tmp_path / "clean.zarr"
    encode(options(meta_run, clean))
    np.testing.assert_allclose(
        zarr.open_group(str(out))["codes"][...], zarr.open_group(str(clean))["codes"][...]
    )
    with pytest.raises(StoreError, match="other settings"):
        encode(options(meta_run, out, code_dtype="float16"))
    # xarray opens the codes (not consolidated: the writer lock is read live) and the
    # meta-model's arrays, every one with dimension names
    assert xr.open_zarr(clean, consolidated=False)["codes"].dims == ("time", "code")
    meta = zarr.open_group(str(clean), mode="r")["meta"]
    assert all(arr.metadata.dimension_names for _, arr in meta.arrays())


@pytest.mark.integration
@pytest.mark.fault
def test_ray_actor_pool_encodes_and_resumes(meta_run, tmp_path, ray_session):  # noqa: F811
    out = tmp_path / "codes.zarr"
    with pytest.raises(Exception, match="injected fault"):
        encode(options(meta_run, out), local=False, fault_at=9)
    done_before = int(np.asarray(zarr.open_group(str(out))["done"][...]).sum())
    assert done_before < T
    s = encode(options(meta_run, out, code_dtype="float32"), local=False)
    # An actor of the failed run may still finish its unit meanwhile: actors skip steps
    # that are done by the time they get to them, so nothing is encoded twice.
    # (so the count done before the rerun is a lower bound of what it skips).
    assert done_before <= s.skipped and s.skipped + s.encoded == T and s.done == T
    assert s.psnr["min"] > PSNR_FLOOR


@pytest.mark.integration
@pytest.mark.fault
def test_a_killed_encoder_actor_loses_nothing(meta_run, tmp_path, ray_session):  # noqa: F811
    out = tmp_path / "codes.zarr"
    # the actor encoding time step 9 SIGKILLs itself once, after writing its codes: Ray
    # Data restarts the actor and retries the unit, and the job finishes in one go
    s = encode(options(meta_run, out), local=False, fault_at=9, fault_kind="kill")
    assert s.done == T
    group = zarr.open_group(str(out), mode="r")
    assert np.asarray(group["done"][...]).astype(bool).all()
    clean = tmp_path / "clean.zarr"
    encode(options(meta_run, clean))
    np.testing.assert_allclose(group["codes"][...], zarr.open_group(str(clean))["codes"][...])
