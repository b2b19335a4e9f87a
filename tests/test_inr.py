"""INR families: shapes, shared vs per-signal inputs, interpolation and initialisation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mia_core.inr import ComposersINR, FourierFeatures, FunctaINR, ReluFourierMLP, Siren
from mia_core.inr.functional import linear
from mia_core.inr.interp import interpolate_grid

B, P, D_IN, D_OUT, WIDTH = 3, 7, 2, 3, 16


@pytest.fixture(autouse=True)
def _float64(float64_default):
    """Build the INRs in float64."""


FAMILIES = {
    "siren": lambda d_out: Siren(D_IN, d_out, WIDTH, 3, 30.0, (2, 3)),
    "siren_no_ctx": lambda d_out: Siren(D_IN, d_out, WIDTH, 3, 30.0, (0, 0)),
    "relu_ff": lambda d_out: ReluFourierMLP(D_IN, d_out, WIDTH, 3, 2.0, 8, (2, 3)),
    "relu_raw": lambda d_out: ReluFourierMLP(D_IN, d_out, WIDTH, 3, 0.0, 8, (0, 0)),
    "functa_vec": lambda d_out: FunctaINR(D_IN, d_out, WIDTH, 3, 30.0, (1, 5), "scale"),
    "functa_grid": lambda d_out: FunctaINR(
        D_IN, d_out, WIDTH, 3, 30.0, (6, 4), "scale_shift", (2, 3)
    ),
    "functa_shift": lambda d_out: FunctaINR(D_IN, d_out, WIDTH, 2, 30.0, (4, 2), "shift"),
    "composers": lambda d_out: ComposersINR(D_IN, d_out, WIDTH, 3, 4, 0.0, 8),
    "composers_ff": lambda d_out: ComposersINR(D_IN, d_out, WIDTH, 4, 2, 1.0, 8),
    "composers_paper": lambda d_out: ComposersINR(D_IN, d_out, WIDTH, 5, 4, 1.0, 8, layout="paper"),
    "functa_paper": lambda d_out: FunctaINR(
        D_IN,
        d_out,
        WIDTH,
        5,
        30.0,
        (6, 4),
        "scale",
        (2, 3),
        backbone="relu",
        latent_map="conv",
        layout="paper",
        ff_sigma=1.0,
        ff_features=8,
    ),
    "functa_conv_siren": lambda d_out: FunctaINR(
        D_IN, d_out, WIDTH, 3, 30.0, (6, 4), "scale_shift", (2, 3), latent_map="conv"
    ),
}


def make(name, d_out=D_OUT, seed=0):
    torch.manual_seed(seed)
    inr = FAMILIES[name](d_out)
    gen = torch.Generator().manual_seed(seed + 1)
    coords = torch.rand(B, P, D_IN, generator=gen, dtype=torch.float64) * 2 - 1
    ctx = None
    if inr.context_init is not None:
        ctx = torch.randn(B, *inr.context_shape, generator=gen, dtype=torch.float64)
    return inr, coords, ctx


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("d_out", [1, D_OUT])
def test_shapes_and_features(name, d_out):
    inr, coords, ctx = make(name, d_out)
    out = inr(coords, ctx)
    assert out.shape == (B, P, d_out)
    out2, feats = inr(coords, ctx, return_features=True)
    assert feats.shape == (B, P, WIDTH)
    torch.testing.assert_close(out2, out, rtol=0, atol=0)
    # the head is the last linear layer on the returned features
    torch.testing.assert_close(out, feats @ inr.out_weight.t() + inr.out_bias)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_shared_coords_equal_expanded_coords(name):
    inr, coords, ctx = make(name)
    shared = coords[:1]
    a = inr(shared, ctx)
    b = inr(shared.expand(B, -1, -1).contiguous(), ctx)
    if ctx is None:  # nothing per signal: the output keeps the coordinates' batch of one
        assert a.shape == (1, P, D_OUT)
        a = a.expand(B, -1, -1)
    assert a.shape == b.shape == (B, P, D_OUT)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("d_out", [1, D_OUT])
def test_per_signal_weights(name, d_out):
    inr, coords, ctx = make(name, d_out)
    weights = inr.weights()
    expanded = {k: w.unsqueeze(0).expand(B, *w.shape) for k, w in weights.items()}
    torch.testing.assert_close(inr(coords, ctx, expanded), inr(coords, ctx), rtol=1e-12, atol=1e-12)
    # Different weights per signal: signal b must see exactly its own weights.
    gen = torch.Generator().manual_seed(9)
    per = {k: w + 0.05 * torch.randn(B, *w.shape, generator=gen) for k, w in weights.items()}
    got = inr(coords, ctx, per)
    for b in range(B):
        single = {k: v[b] for k, v in per.items()}
        sub_ctx = None if ctx is None else ctx[b : b + 1]
        ref = inr(coords[b : b + 1], sub_ctx, single)
        torch.testing.assert_close(got[b : b + 1], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in FAMILIES if "no_ctx" not in n and "raw" not in n])
def test_context_changes_output(name):
    inr, coords, ctx = make(name)
    # Not a constant shift: the conv latent map's LayerNorm is blind to one per token.
    gen = torch.Generator().manual_seed(3)
    delta = 0.5 * torch.randn(ctx.shape, generator=gen, dtype=ctx.dtype)
    assert not torch.allclose(inr(coords, ctx), inr(coords, ctx + delta))


def test_linear_shared_and_per_signal():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, P, 4, generator=gen)
    w = torch.randn(B, 5, 4, generator=gen)
    b = torch.randn(B, 5, generator=gen)
    out = linear(x, w, b)
    for i in range(B):
        torch.testing.assert_close(out[i], x[i] @ w[i].T + b[i])
    torch.testing.assert_close(linear(x[:1], w, b)[1], x[0] @ w[1].T + b[1])
    torch.testing.assert_close(linear(x, w[0], None), x @ w[0].T)


def test_composers_equals_explicit_low_rank_weight():
    inr = ComposersINR(1, 2, width=8, depth=2, rank=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(B, P, 1, generator=gen) * 2 - 1
    v = torch.randn(B, 3, 8, generator=gen)
    h0 = torch.relu(x @ inr.w0.T + inr.b0)
    for b in range(B):
        w_n = inr.u @ v[b]  # W_n = U V_n, (width, width)
        h1 = torch.relu(h0[b] @ w_n.T + inr.b1)
        ref = h1 @ inr.out_weight.T + inr.out_bias
        torch.testing.assert_close(inr(x[b : b + 1], v[b : b + 1])[0], ref)
    with pytest.raises(ValueError, match="needs a context"):
        inr(x, None)


def test_composers_paper_layout_has_five_linear_layers_and_no_composed_bias():
    inr = ComposersINR(1, 1, width=8, depth=5, rank=3, layout="paper")
    matrices = [k for k, w in inr.weights().items() if w.dim() == 2]
    assert matrices == ["w0", "u", "w2", "w3", "out_weight"]  # input, composed, 2 hidden, head
    assert "b1" not in inr.weights() and inr.b1 is None
    legacy = ComposersINR(1, 1, width=8, depth=5, rank=3)
    assert len([w for w in legacy.weights().values() if w.dim() == 2]) == 6
    assert "b1" in legacy.weights()
    # The composed layer computes relu(U V_n h) exactly, with no bias.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, P, 1, generator=gen) * 2 - 1
    v = torch.randn(1, 3, 8, generator=gen)
    h = torch.relu(x[0] @ inr.w0.T + inr.b0)
    h = torch.relu(h @ (inr.u @ v[0]).T)
    for i in (2, 3):
        h = torch.relu(h @ getattr(inr, f"w{i}").T + getattr(inr, f"b{i}"))
    torch.testing.assert_close(inr(x, v)[0], h @ inr.out_weight.T + inr.out_bias)
    with pytest.raises(ValueError, match="depth >= 3"):
        ComposersINR(1, 1, width=8, depth=2, rank=3, layout="paper")


# --- Functa grid interpolation -----------------------------------------------------------------


def test_interp_1d_exact_at_nodes_and_linear_between():
    gen = torch.Generator().manual_seed(0)
    n, dim = 5, 3
    latent = torch.randn(2, n, dim, generator=gen)
    nodes = torch.linspace(-1, 1, n)[None, :, None]
    torch.testing.assert_close(interpolate_grid(latent, (n,), nodes), latent)
    pts = torch.rand(1, 50, 1, generator=gen) * 2.4 - 1.2  # includes clamped points outside
    got = interpolate_grid(latent, (n,), pts)
    xs = np.linspace(-1, 1, n)
    for b in range(2):
        for c in range(dim):
            ref = np.interp(pts[0, :, 0].numpy(), xs, latent[b, :, c].numpy())
            np.testing.assert_allclose(got[b, :, c].numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid", [(3, 4), (1, 4), (4, 1), (2, 3, 2)])
def test_interp_nd_matches_grid_sample(grid):
    gen = torch.Generator().manual_seed(1)
    bsz, dim, d = 2, 3, len(grid)
    latent = torch.randn(bsz, math.prod(grid), dim, generator=gen)
    pts = torch.rand(bsz, 40, d, generator=gen) * 2.4 - 1.2
    got = interpolate_grid(latent, grid, pts)
    # Independent reference: grid_sample with aligned corners, border padding (= clamping).
    vol = latent.transpose(1, 2).reshape(bsz, dim, *grid)
    g = pts.flip(-1).reshape(bsz, 40, *([1] * (d - 1)), d)  # grid_sample wants (x=last axis)
    ref = F.grid_sample(vol, g, mode="bilinear", padding_mode="border", align_corners=True)
    ref = ref.reshape(bsz, dim, 40).transpose(1, 2)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_interp_2d_nodes_and_bilinear_midpoint():
    latent = torch.arange(6.0).reshape(1, 6, 1)  # grid (2, 3), row-major
    nodes = torch.tensor([[[-1.0, -1.0], [-1.0, 0.0], [-1.0, 1.0], [1.0, -1.0], [1, 0], [1, 1]]])
    torch.testing.assert_close(interpolate_grid(latent, (2, 3), nodes), latent)
    mid = torch.tensor([[[0.0, -0.5], [0.0, 0.5], [-1.0, 0.25]]])
    ref = torch.tensor([[[(0 + 1 + 3 + 4) / 4], [(1 + 2 + 4 + 5) / 4], [0.25 * 2 + 0.75 * 1]]])
    torch.testing.assert_close(interpolate_grid(latent, (2, 3), mid), ref)
    with pytest.raises(ValueError, match="2-D coordinates"):
        interpolate_grid(latent, (2, 3), mid[..., :1])


def test_functa_interpolate_then_map_equals_map_then_interpolate():
    inr, coords, ctx = make("functa_grid")
    psi = inr.modulations(coords, ctx, None)
    mapped = ctx @ inr.mod_w.T + inr.mod_b  # map every grid cell first
    ref = interpolate_grid(mapped, inr.grid, coords).reshape(psi.shape)
    torch.testing.assert_close(psi, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid", [(6,), (2, 3)])
def test_functa_conv_latent_map_applied_before_interpolation(grid):
    d_in = len(grid)
    torch.manual_seed(0)
    inr = FunctaINR(
        d_in,
        1,
        8,
        5,
        30.0,
        (6, 4),
        "scale",
        grid,
        backbone="relu",
        latent_map="conv",
        layout="paper",
    )
    with torch.no_grad():  # non-trivial LayerNorm affine and bias
        inr.map_ln_w.normal_()
        inr.map_ln_b.normal_()
        inr.mod_b.normal_()
    gen = torch.Generator().manual_seed(1)
    ctx = torch.randn(B, 6, 4, generator=gen)
    coords = torch.rand(B, P, d_in, generator=gen) * 2 - 1
    psi = inr.modulations(coords, ctx, None)
    assert psi.shape == (B, P, 3, 1, 8)  # paper layout: depth 5 -> 3 modulated layers
    # Reference: LayerNorm over D, then torch's convolution (kernel 3, zero padding 1) on
    # the grid, and only then interpolation at the coordinates.
    normed = F.layer_norm(ctx, (4,), inr.map_ln_w, inr.map_ln_b)
    vol = normed.transpose(1, 2).reshape(B, 4, *grid)
    kernel = inr.mod_w.reshape(-1, *([3] * d_in), 4).movedim(-1, 1)
    conv = F.conv1d if d_in == 1 else F.conv2d
    mapped = conv(vol, kernel, inr.mod_b, padding=1).reshape(B, -1, 6).transpose(1, 2)
    ref = interpolate_grid(mapped, grid, coords).reshape(psi.shape)
    torch.testing.assert_close(psi, ref, rtol=1e-10, atol=1e-12)
    # Not commutable: interpolating the latent first gives something else.
    wrong = interpolate_grid(ctx, grid, coords)
    assert wrong.shape[-1] == 4 and inr.mod_w.shape[1] == 4 * 3**d_in
    # The ReLU backbone: 5 linear layers, ReLU features.
    out, feats = inr(coords, ctx, return_features=True)
    assert out.shape == (B, P, 1) and feats.shape == (B, P, 8) and (feats >= 0).all()
    assert [k for k, w in inr.weights().items() if k.startswith("w")] == ["w0", "w1", "w2", "w3"]


def test_functa_conv_needs_grid_and_checks_options():
    with pytest.raises(ValueError, match="latent grid"):
        FunctaINR(2, 1, 8, 3, 30.0, (1, 4), "scale", latent_map="conv")
    with pytest.raises(ValueError, match="backbone"):
        FunctaINR(2, 1, 8, 3, 30.0, (1, 4), "scale", backbone="tanh")


def test_functa_rejects_bad_grid_and_modulation():
    with pytest.raises(ValueError, match="cells"):
        FunctaINR(2, 1, 8, 3, 30.0, (5, 4), "scale", (2, 3))
    with pytest.raises(ValueError, match="modulation"):
        FunctaINR(2, 1, 8, 3, 30.0, (1, 4), "gain")


# --- initialisation and encodings ------------------------------------------------------------


def test_siren_init_bounds():
    width, omega0, d_in, ctx = 256, 30.0, 2, (2, 4)
    inr = Siren(d_in, 3, width, 4, omega0, ctx)
    first = 1.0 / (d_in + 8)
    hidden = math.sqrt(6.0 / width) / omega0

    def check(t, bound):
        assert t.abs().max() <= bound
        assert t.abs().max() > 0.9 * bound  # uniform over the whole interval, not narrower
        assert abs(t.mean().item()) < 0.1 * bound

    check(inr.w0, first)
    check(inr.c0, first)
    for i in range(1, 4):
        check(getattr(inr, f"w{i}"), hidden)
    check(inr.out_weight, hidden)


def test_fourier_features_identity_at_sigma_zero():
    ff = FourierFeatures(3, 16, 0.0)
    x = torch.randn(2, 5, 3)
    assert ff.d_out == 3 and ff(x) is x
    assert not list(ff.buffers())


def test_fourier_features_encoding():
    ff = FourierFeatures(2, 6, 1.5, seed=4)
    assert ff.d_out == 12 and ff.B.shape == (2, 6)
    assert torch.equal(ff.B, FourierFeatures(2, 6, 1.5, seed=4).B)
    x = torch.randn(3, 2)
    enc = ff(x)
    proj = 2 * math.pi * x @ ff.B
    torch.testing.assert_close(enc, torch.cat([proj.sin(), proj.cos()], -1))
    torch.testing.assert_close(enc[:, :6] ** 2 + enc[:, 6:] ** 2, torch.ones(3, 6))


def test_context_init_and_weight_names():
    inr = Siren(1, 1, 8, 2, 30.0, (2, 3))
    assert inr.context_init.shape == (2, 3)
    assert "context_init" not in inr.weight_names()
    assert set(inr.weights()) == set(inr.weight_names())
    assert inr.initial_context(4).shape == (4, 2, 3)
    assert Siren(1, 1, 8, 2).initial_context(4) is None
