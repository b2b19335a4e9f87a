"""Comparing episodes signal by signal, independent of batching and padding."""

import torch


def signal_tensors(ep, b):
    """Modality -> signal ``b``'s tensors, padding trimmed.

    Order: support x, support y (the valid support points only), query x, query y, query
    mask, query-support mask, scale.
    """
    out = {}
    for m, mb in ep.items():
        n = int(mb.support_mask[b].sum())
        qx = mb.query_x[0 if mb.query_x.shape[0] == 1 else b]
        out[m] = [
            mb.support_x[b, :n],
            mb.support_y[b, :n],
            qx,
            mb.query_y[b],
            mb.query_mask[b],
            mb.query_support[b],
            mb.scale[b],
        ]
    return out


def assert_same_signal(a, b):
    """Two :func:`signal_tensors` results are bitwise equal."""
    assert a.keys() == b.keys()
    for m in a:
        for x, y in zip(a[m], b[m], strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
