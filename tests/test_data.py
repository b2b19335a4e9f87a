"""Synthetic data, support sampling, episode tensors and the masked metrics."""

import math

import pytest
import torch

from mia_core.data import generate_synthetic1d, make_episode, sample_support
from mia_core.meta import masked_mse, psnr, signal_metrics

# --- generate_synthetic1d ------------------------------------------------------------------


def test_synthetic_is_deterministic_by_seed():
    a, b = generate_synthetic1d(6, 30, seed=3), generate_synthetic1d(6, 30, seed=3)
    c = generate_synthetic1d(6, 30, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.scale, b.scale)
    for m in a.values:
        assert torch.equal(a.values[m], b.values[m])
        assert not torch.equal(a.values[m], c.values[m])


def test_synthetic_shapes_and_coordinates():
    mods = ("sine", "relu")
    s = generate_synthetic1d(5, 40, modalities=mods, seed=0)
    assert s.num_signals == 5 and s.x.shape == (40, 1)
    assert set(s.values) == set(mods)
    for v in s.values.values():
        assert v.shape == (5, 40, 1) and v.dtype == torch.float32
    assert s.x.min().item() == -1.0 and s.x.max().item() == 1.0
    assert (s.x[1:] > s.x[:-1]).all()
    sub = s.subset(torch.tensor([1, 3]))
    assert torch.equal(sub.values["sine"], s.values["sine"][[1, 3]])
    assert torch.equal(sub.scale, s.scale[[1, 3]])


def test_synthetic_scale_is_the_amplitude():
    # On a wide domain tanh saturates at -1 and +1, so its range is exactly 2a; relu is
    # exactly 0 on the left, so its minimum is the shared offset d = tanh_min + a.
    s = generate_synthetic1d(
        20,
        400,
        x_range=(-200.0, 200.0),
        noise_std=0.0,
        modalities=("tanh", "relu"),
        seed=7,
        variant="shared",
    )
    tanh, relu = s.values["tanh"][..., 0], s.values["relu"][..., 0]
    amp = (tanh.max(1).values - tanh.min(1).values) / 2
    torch.testing.assert_close(s.scale, amp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(relu.min(1).values, tanh.min(1).values + amp, rtol=1e-5, atol=1e-5)
    assert (s.scale >= 0.5).all() and (s.scale <= 2.0).all()


def test_synthetic_noise_is_additive_with_the_given_std():
    kw = {"modalities": ("sine",), "seed": 1, "variant": "shared"}
    clean = generate_synthetic1d(50, 200, noise_std=0.0, **kw)
    noisy = generate_synthetic1d(50, 200, noise_std=0.1, **kw)
    diff = noisy.values["sine"] - clean.values["sine"]
    assert abs(diff.std().item() - 0.1) < 0.005 and abs(diff.mean().item()) < 0.005
    assert torch.equal(clean.scale, noisy.scale)


def test_synthetic_rejects_unknown_modality():
    with pytest.raises(ValueError, match="unknown synthetic modalities"):
        generate_synthetic1d(2, 5, modalities=("sine", "cosine"))
    with pytest.raises(ValueError, match="unknown synthetic variant"):
        generate_synthetic1d(2, 5, variant="independent")


def _wide(n, noise_std, seed=0):
    """Paper variant on a domain where tanh saturates (range 2 a_m, centre d_m) and relu
    is 0 on the left (minimum d_m): amplitudes and offsets can be read off the values."""
    s = generate_synthetic1d(
        n, 4000, (-400.0, 400.0), noise_std, ("tanh", "relu", "sine"), seed, "paper"
    )
    tanh, relu = s.values["tanh"][..., 0].double(), s.values["relu"][..., 0].double()
    hi, lo = tanh.max(1).values, tanh.min(1).values
    return s, (hi - lo) / 2, (hi + lo) / 2, relu.min(1).values


def test_synthetic_paper_parameters_follow_mtnp_ranges_without_jitter():
    s, amp, d_tanh, d_relu = _wide(400, 0.0)
    # noise_std = 0: every modality has the shared parameters, no observation noise
    torch.testing.assert_close(amp, s.scale.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d_tanh, d_relu, rtol=1e-5, atol=1e-5)
    for m in s.values:
        assert torch.equal(s.modality_scale[m], s.scale)
    lo, hi = math.exp(-0.5), math.exp(0.5)
    assert s.scale.min() >= lo - 1e-6 and s.scale.max() <= hi + 1e-6
    assert s.scale.min() < lo + 0.05 and s.scale.max() > hi - 0.05
    assert d_tanh.min() >= -2 - 1e-5 and d_tanh.max() <= 2 + 1e-5
    assert d_tanh.min() < -1.9 and d_tanh.max() > 1.9


def test_synthetic_paper_jitters_parameters_per_modality():
    jitter = 0.02
    s, amp, d_tanh, d_relu = _wide(2000, jitter, seed=3)
    # the tanh amplitude read off the values is that modality's own scale a_m
    torch.testing.assert_close(amp, s.modality_scale["tanh"].double(), rtol=1e-5, atol=1e-5)
    # a_m - a and a_m - a_m' have the jitter's std (sqrt 2 for a difference of two)
    da = s.modality_scale["tanh"] - s.scale
    dd = s.modality_scale["tanh"] - s.modality_scale["sine"]
    assert abs(da.std().item() - jitter) < 0.002 and abs(da.mean().item()) < 0.002
    assert abs(dd.std().item() - jitter * math.sqrt(2)) < 0.003
    # offsets differ between modalities by the same jitter
    assert abs((d_tanh - d_relu).std().item() - jitter * math.sqrt(2)) < 0.003
    # the modality scales are positive and feed nmse = mse / a_m^2 per signal and modality
    for m in s.values:
        assert s.modality_scale[m].shape == (2000,) and (s.modality_scale[m] > 0).all()


def test_synthetic_paper_shapes_and_determinism():
    a = generate_synthetic1d(6, 30, seed=3)
    b = generate_synthetic1d(6, 30, seed=3, variant="paper")
    c = generate_synthetic1d(6, 30, seed=4)
    assert a.x.shape == (30, 1) and set(a.values) == {"sine", "gaussian", "tanh", "relu"}
    for m in a.values:
        assert a.values[m].shape == (6, 30, 1) and a.values[m].dtype == torch.float32
        assert torch.equal(a.values[m], b.values[m])
        assert torch.equal(a.modality_scale[m], b.modality_scale[m])
        assert not torch.equal(a.values[m], c.values[m])
    sub = a.subset(torch.tensor([2, 0]))
    assert torch.equal(sub.scale_of("tanh"), a.modality_scale["tanh"][[2, 0]])
    shared = generate_synthetic1d(6, 30, seed=3, variant="shared")
    assert shared.modality_scale == {} and torch.equal(shared.scale_of("tanh"), shared.scale)


# --- sample_support ----------------------------------------------------------------------------


def indexed_signals(bsz=4, npts=30, nan_every=(3, 4, 5, 2), seed=0):
    """Values that encode their own index; every ``k``-th point of signal ``b`` is NaN."""
    idx = torch.arange(npts, dtype=torch.float64)
    y = (idx[None, :] + 1000 * torch.arange(bsz)[:, None]).to(torch.float64)
    valid = torch.ones(bsz, npts, dtype=torch.bool)
    for b, k in enumerate(nan_every):
        valid[b, ::k] = False
    y = y.masked_fill(~valid, float("nan"))[..., None]
    x = torch.linspace(-1, 1, npts, dtype=torch.float64)[None, :, None]
    return x, y, valid


@pytest.mark.parametrize("ratio", [(0.1, 0.9), (0.3, 0.3), (1.0, 1.0), (0.01, 0.02)])
def test_sample_support_counts_and_validity(ratio):
    x, y, valid = indexed_signals()
    mb = sample_support(x, y, valid, ratio, torch.Generator().manual_seed(0))
    n_valid = valid.sum(1)
    counts = mb.support_mask.sum(1).long()
    lo = torch.clamp(torch.round(ratio[0] * n_valid.double()).long(), min=1)
    hi = torch.clamp(torch.round(ratio[1] * n_valid.double()).long(), min=1)
    assert ((counts >= lo) & (counts <= hi)).all(), (counts, lo, hi)
    if ratio[0] == ratio[1]:
        expect = [max(1, round(ratio[0] * n)) for n in n_valid.tolist()]
        assert counts.tolist() == expect
    assert mb.support_x.shape[:2] == mb.support_y.shape[:2] == mb.support_mask.shape
    assert mb.support_mask.shape[1] == counts.max()
    for b in range(y.shape[0]):
        real = mb.support_mask[b] > 0
        # rank-ordered mask: real points first, then padding
        assert real[: counts[b]].all() and not real[counts[b] :].any()
        idx = (mb.support_y[b, real, 0] - 1000 * b).long()
        assert len(set(idx.tolist())) == len(idx), "support points must be unique"
        assert valid[b, idx].all(), "NaN points must never be in the support"
        torch.testing.assert_close(mb.support_x[b, real], x[0, idx])
        expect_q = torch.zeros(y.shape[1], dtype=torch.float64)
        expect_q[idx] = 1.0
        assert torch.equal(mb.query_support[b], expect_q)
    assert torch.equal(mb.query_mask, valid.double())
    assert not torch.isnan(mb.query_y).any() and not torch.isnan(mb.support_y).any()
    assert mb.query_x.shape == (1, 30, 1)
    assert torch.equal(mb.scale, torch.ones(4, dtype=torch.float64))


def test_sample_support_is_reproducible_from_the_generator_seed():
    x, y, valid = indexed_signals()

    def draw(seed):
        return sample_support(x, y, valid, (0.2, 0.8), torch.Generator().manual_seed(seed))

    a, b, c = draw(5), draw(5), draw(6)
    for name in vars(a):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.query_support, c.query_support)


def test_sample_support_takes_all_valid_points_at_ratio_one():
    x, y, valid = indexed_signals(nan_every=(2, 2, 3, 7))
    mb = sample_support(x, y, valid, (1.0, 1.0), torch.Generator().manual_seed(0))
    assert torch.equal(mb.query_support, valid.double())
    assert torch.equal(mb.support_mask.sum(1), valid.sum(1).double())


def test_sample_support_per_signal_coordinates_and_scale():
    x, y, valid = indexed_signals()
    xb = torch.randn(4, 30, 1, dtype=torch.float64)
    scale = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    mb = sample_support(xb, y, valid, (0.5, 0.5), torch.Generator().manual_seed(0), scale)
    for b in range(4):
        real = mb.support_mask[b] > 0
        idx = (mb.support_y[b, real, 0] - 1000 * b).long()
        torch.testing.assert_close(mb.support_x[b, real], xb[b, idx])
    assert mb.query_x.shape == (4, 30, 1) and torch.equal(mb.scale, scale)


def test_make_episode_and_batch_helpers():
    s = generate_synthetic1d(6, 25, modalities=("sine", "gaussian"), seed=0)
    ep = make_episode(
        s,
        torch.tensor([4, 1]),
        {"sine": (0.2, 0.4), "gaussian": (0.5, 0.5)},
        torch.Generator().manual_seed(0),
    )
    assert set(ep) == {"sine", "gaussian"}
    for m, mb in ep.items():
        assert mb.batch_size == 2 and mb.query_x.shape == (1, 25, 1)
        assert torch.equal(mb.query_y, s.values[m][[4, 1]])
        assert torch.equal(mb.scale, s.modality_scale[m][[4, 1]])  # paper: a_m per modality
        one = mb.select(slice(1, 2))
        assert one.batch_size == 1 and one.query_x.shape == (1, 25, 1)
        assert torch.equal(one.support_mask, mb.support_mask[1:2])
        dbl = mb.to("cpu", torch.float64)
        assert dbl.support_y.dtype == torch.float64 and dbl.query_mask.dtype == torch.float64
        assert torch.equal(dbl.support_y.float(), mb.support_y)
    assert torch.equal(ep["gaussian"].support_mask.sum(1), torch.tensor([12.0, 12.0]))


# --- metrics on masked point sets --------------------------------------------------------------


def test_masked_mse_by_hand():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0], [1, 1]]])
    target = torch.tensor([[[0.0, 0.0], [3.0, 2.0], [9.0, 9.0]], [[0.0, 0.0]] * 3])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    got = masked_mse(pred, target, mask)
    # signal 0: ((1 + 4) / 2 + (0 + 4) / 2) / 2 ; signal 1: no counted point -> 0
    torch.testing.assert_close(got, torch.tensor([2.25, 0.0]))


def test_signal_metrics_by_hand():
    # 3 signals, 4 points, 1 channel; errors chosen so every region's MSE is easy.
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 3.0, 5.0], [2.0, 2.0, 2.0, 0.0]])
    valid = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    support = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    scale = torch.tensor([1.0, 2.0, 0.5])
    out = signal_metrics(pred[..., None], target[..., None], valid, support, scale, data_range=2.0)
    nan = float("nan")
    expect_mse = {
        "all": [(1 + 4 + 9) / 3, (1 + 1 + 9 + 25) / 4, 4 / 4],
        "support": [1.0, (1 + 1 + 9 + 25) / 4, nan],  # point 3 of signal 0 is invalid
        "nonsupport": [(4 + 9) / 2, nan, 1.0],
    }
    for region, mse in expect_mse.items():
        mse_t = torch.tensor(mse)
        torch.testing.assert_close(out[f"mse_{region}"], mse_t, equal_nan=True)
        psnr_ref = torch.tensor([10 * math.log10(4.0 / v) if v == v else nan for v in mse])
        torch.testing.assert_close(out[f"psnr_{region}"], psnr_ref, equal_nan=True)
        torch.testing.assert_close(out[f"nmse_{region}"], mse_t / scale**2, equal_nan=True)
    assert set(out) == {f"{k}_{r}" for k in ("mse", "psnr", "nmse") for r in expect_mse}


def test_psnr_of_perfect_fit_is_finite():
    assert psnr(torch.tensor(0.0)).item() == pytest.approx(200.0)
    assert psnr(torch.tensor(0.01)).item() == pytest.approx(20.0)


def test_sample_support_signal_without_valid_points_gets_no_support():
    x, y, valid = indexed_signals()
    y[2] = float("nan")
    valid[2] = False
    mb = sample_support(x, y, valid, (0.5, 0.5), torch.Generator().manual_seed(0))
    assert mb.support_mask[2].sum() == 0 and mb.query_mask[2].sum() == 0
    assert (mb.support_mask[[0, 1, 3]].sum(1) > 0).all()
