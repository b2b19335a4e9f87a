"""MWT: gradient routing, per-step rates, batched inner loop, builders, the training job."""

from __future__ import annotations

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch
import zarr
from tiny_configs import TINY_MWT_MODEL

from mia_core.config import load_config
from mia_core.mwt import Augment, build_mwt, count_lrs
from pipelines.data.builders.__main__ import main as build_main
from pipelines.data.stores import StoreError

TINY = [
    "method.name=mwt",
    *TINY_MWT_MODEL,
]


def _model(*overrides: str, seed: int = 0, dtype=torch.float64):
    cfg = load_config(None, [*TINY, *overrides])
    torch.manual_seed(seed)
    model = build_mwt(cfg.model, cfg.method, (5, 4), 1, 3).to(dtype)
    images = torch.rand(4, 5, 4, 1, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return model, images, torch.tensor([0, 1, 2, 1])


def _grads(model, loss):
    params = list(model.parameters())
    gs = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return {n: g for (n, _), g in zip(model.named_parameters(), gs, strict=True)}


def test_shapes_and_one_rate_per_parameter_and_step():
    model, images, labels = _model("model.depth=4", "method.inner_steps=3")
    out = model(images, labels)
    assert out.logits.shape == (4, 3) and out.mse.shape == (4,) and len(out.inner_losses) == 3
    n_rates, expected = count_lrs(model.siren)
    n_theta = sum(p.numel() for p in model.siren.theta)
    assert n_rates == expected == 3 * n_theta
    for a, t in zip(model.siren.alpha, model.siren.theta, strict=True):
        assert a.shape == (3, *t.shape)
    # 3 hidden layers x 8 neurons, each token = 8 input weights + bias
    tokens = model.classifier.tokens(model.siren.hidden([p[None] for p in model.siren.theta]))
    assert tokens.shape == (1, 24, 9) and model.classifier.beta.shape == (24, 9)


def test_gradient_routing_classifier_rec_free_and_w_cls_scaling():
    model, images, labels = _model("method.mwt.w_cls=0.5")
    out = model(images, labels)
    g_rec, g_cls, g_all = _grads(model, out.rec_loss), _grads(model, out.cls_loss), None
    g_all = _grads(model, out.loss)
    cls_names = [n for n, _ in model.named_parameters() if n.startswith("classifier.")]
    siren_names = [n for n, _ in model.named_parameters() if n.startswith("siren.")]
    # the classifier gets grad(L_cls) only
    assert all(g_rec[n] is None for n in cls_names)
    assert all(torch.equal(g_all[n], g_cls[n]) for n in cls_names)
    # theta and alpha get grad(L_rec) + w_cls * grad(L_cls) (grad(L_cls) of the unscaled model)
    ref, _, _ = _model("method.mwt.w_cls=1.0")
    out1 = ref(images, labels)
    g_cls1 = _grads(ref, out1.cls_loss)
    for n in siren_names:
        assert g_cls1[n] is not None and g_cls1[n].abs().sum() > 0, n
        torch.testing.assert_close(g_all[n], g_rec[n] + 0.5 * g_cls1[n])
    assert any(n.startswith("siren.alpha") for n in siren_names)


def test_wt_baseline_gives_siren_no_classification_gradient():
    model, images, labels = _model("method.mwt.w_cls=0")
    out = model(images, labels)
    g_cls = _grads(model, out.cls_loss)
    assert all(g_cls[n] is None for n, _ in model.named_parameters() if n.startswith("siren."))
    assert g_cls["classifier.head.weight"].abs().sum() > 0


def test_batched_inner_loop_equals_per_image_loop():
    model, images, _ = _model()
    values = images.reshape(4, -1, 1)
    phi, losses = model.siren.adapt(model.coords, values)
    for i in range(4):
        phi_i, losses_i = model.siren.adapt(model.coords, values[i : i + 1])
        for a, b in zip(phi, phi_i, strict=True):
            torch.testing.assert_close(a[i : i + 1], b)
        torch.testing.assert_close(torch.stack(losses)[:, i], torch.stack(losses_i)[:, 0])
    # evaluation mode (no graph) gives the same weights
    phi_eval, _ = model.siren.adapt(model.coords, values, create_graph=False)
    for a, b in zip(phi, phi_eval, strict=True):
        torch.testing.assert_close(a, b)


def test_pixel_subsampling_is_seeded_and_changes_the_fit():
    model, images, labels = _model("method.mwt.sample_fraction=0.25")
    values = images.reshape(4, -1, 1)

    def run(seed, frac=0.25):
        gen = torch.Generator().manual_seed(seed)
        return model.siren.adapt(model.coords, values, frac, gen)[0][0]

    torch.testing.assert_close(run(3), run(3))
    assert not torch.allclose(run(3), run(4)) and not torch.allclose(run(3), run(3, 1.0))


def test_augment_identity_flip_and_shapes():
    img = torch.arange(12.0).reshape(1, 3, 4, 1)
    assert Augment()(img) is img
    flipped = Augment(flip=True)(img.expand(64, -1, -1, -1), torch.Generator().manual_seed(0))
    is_flip = [torch.allclose(f, img[0].flip(1), atol=1e-5) for f in flipped]
    is_same = [torch.allclose(f, img[0], atol=1e-5) for f in flipped]
    assert all(a or b for a, b in zip(is_flip, is_same, strict=True))
    assert 10 < sum(is_flip) < 54
    moved = Augment(shift=0.2, rotate=20.0, scale=(0.8, 1.2))(img.expand(8, -1, -1, -1))
    assert moved.shape == (8, 3, 4, 1) and not torch.allclose(moved[0], img[0])


# --- builders on tiny files in the standard formats ------------------------------------


def _idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}i", *array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open(f"{path}.gz", "wb") if gz else open(path, "wb")).write(raw)


def test_mnist_idx_builder_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    tr_img = rng.integers(0, 256, (20, 6, 6), dtype=np.uint8)
    tr_img[0, 0, 0], tr_img[1, 0, 0] = 0, 255
    te_img = rng.integers(0, 256, (5, 6, 6), dtype=np.uint8)
    tr_lab, te_lab = rng.integers(0, 10, 20), rng.integers(0, 10, 5)
    _idx(tmp_path / "train-images-idx3-ubyte", tr_img, gz=True)
    _idx(tmp_path / "train-labels-idx1-ubyte", tr_lab, gz=True)
    _idx(tmp_path / "t10k-images-idx3-ubyte", te_img, gz=False)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", te_lab, gz=False)
    out = tmp_path / "mnist.zarr"
    args = ["mnist", "--out", str(out), "--folder", str(tmp_path), "--val-fraction", "0.25"]
    assert build_main(args) == 0
    g = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(g["labels"][...], np.concatenate([tr_lab, te_lab]))
    np.testing.assert_array_equal(g["split"][...] == 2, np.arange(25) >= 20)
    assert (g["split"][...] == 1).sum() == 5
    raw = np.concatenate([tr_img, te_img]).astype(np.float32)[..., None]
    np.testing.assert_allclose(g["image"][...], raw / 255.0, atol=1e-6)
    assert g.attrs["mia_store"]["classes"] == [str(i) for i in range(10)]
    # a corrupt file is reported by name
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02\x03\x04")
    capsys.readouterr()
    assert build_main(args) == 2
    assert "t10k-labels-idx1-ubyte: not an IDX file" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_cifar10_builder_round_trip_and_refuses_code_in_pickles(tmp_path, capsys):
    rng = np.random.default_rng(1)
    planes, labels = {}, {}
    for name, n in (("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 3)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 0, 255, 128  # pure R/G/B planes
        lab = rng.integers(0, 10, n).tolist()
        planes[name], labels[name] = data, lab
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": lab}, f, 2)
    with open(tmp_path / "batches.meta", "wb") as f:
        names = [f"c{i}".encode() for i in range(10)]
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, 2)
    out = tmp_path / "cifar.zarr"
    args = ["cifar10", "--out", str(out), "--folder", str(tmp_path), "--normalisation", "none"]
    assert build_main(args) == 0
    g = zarr.open_group(str(out), mode="r")
    img = g["image"][...]
    assert img.shape == (13, 32, 32, 3)
    np.testing.assert_array_equal(img[0, 5, 7], [0, 255, 128])
    expected = planes["data_batch_1"][1].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(img[1], expected)
    all_labels = labels["data_batch_1"] + labels["data_batch_2"] + labels["test_batch"]
    np.testing.assert_array_equal(g["labels"][...], all_labels)
    assert (g["split"][...] == 2).sum() == 3 and g.attrs["mia_store"]["classes"][3] == "c3"
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f, 2)
    capsys.readouterr()
    assert build_main(args) == 2
    assert "refusing to load global" in capsys.readouterr().err


def test_digits_builder_resizes_and_subsets(tmp_path):
    out = tmp_path / "d.zarr"
    assert build_main(["digits", "--out", str(out), "--size", "12", "--limit", "100"]) == 0
    g = zarr.open_group(str(out), mode="r")
    assert g["image"].shape == (100, 12, 12, 1) and g["labels"].shape == (100,)
    assert set(np.unique(g["split"][...])) == {0, 1, 2}


# --- the training job --------------------------------------------------------------------


JOB = [
    *TINY,
    "data.modalities=[image]",
    "run.steps=4",
    "run.batch_size=8",
    "run.log_every=2",
    "run.eval_every=2",
    "run.checkpoint_every=2",
    "run.eval_batch_size=64",
    "run.experiment=mwt-test",
    "method.mwt.rotate=10.0",
]


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "digits.zarr"
    assert build_main(["digits", "--out", str(out), "--limit", "120"]) == 0
    return out


def test_training_job_evaluates_tracks_and_resumes(digits_store, tmp_path, capsys):
    import mlflow

    from ray_jobs.evaluate import main as evaluate_main
    from ray_jobs.train import main as train_main

    common = [f"data.store={digits_store}", f"run.out_dir={tmp_path}", "run.name=tiny"]
    cfg_args = ["--config", "configs/experiments/mwt_digits.yaml", "--local"]
    assert train_main([*cfg_args, *JOB, *common]) == 0
    run_dir = tmp_path / "tiny"
    val = json.loads((run_dir / "metrics_val.json").read_text())  # train reports validation
    assert 0.0 <= val["val_accuracy"] <= 1.0 and "logreg_test_accuracy" not in val
    assert evaluate_main(["--run-dir", str(run_dir), "--split", "test"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_n"] > 0
    assert metrics["test_psnr"] > 5.0 and 0.5 < metrics["logreg_test_accuracy"] <= 1.0
    assert "logistic regression" in (run_dir / "results.md").read_text()
    assert (run_dir / "checkpoints" / "best.pt").exists()
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run(run_id)
    assert "test/test_accuracy" in run.data.metrics and "val_accuracy" in run.data.metrics
    assert "val/val_accuracy" in run.data.metrics  # the end-of-train report
    assert run.data.params["method.mwt.w_cls"] == "1.0"
    capsys.readouterr()
    assert train_main([*cfg_args, *JOB, *common, "run.steps=6"]) == 0
    log = capsys.readouterr().out
    assert "resumed at step 4" in log and "step      6/6" in log
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 6 and json.loads((run_dir / "metrics_val.json").read_text())["step"] > 0


def test_store_without_labels_is_a_clear_error(tmp_path):
    from pipelines.data.labelled_images import load_labelled

    out = tmp_path / "nolabels.zarr"
    assert build_main(["images", "--out", str(out), "--skimage-samples", "--num", "3"]) == 0
    cfg = load_config(None, [*TINY, f"data.store={out}", "data.modalities=[gray]"])
    with pytest.raises(StoreError, match=r"nolabels\.zarr: no label array 'labels'"):
        load_labelled(cfg)


def test_shipped_configs_load():
    mwt = load_config("configs/experiments/mwt_digits.yaml")
    wt = load_config("configs/experiments/wt_digits.yaml")
    assert mwt.method.name == wt.method.name == "mwt"
    assert mwt.method.mwt.w_cls > 0 and wt.method.mwt.w_cls == 0
    assert mwt.run.steps == wt.run.steps and mwt.model == wt.model


def test_first_order_drops_second_order_terms_only():
    model, images, labels = _model("method.first_order=true", "method.mwt.w_cls=0")
    g_fo = _grads(model, model(images, labels).rec_loss)
    model.first_order = False
    g_so = _grads(model, model(images, labels).rec_loss)
    for n, g in g_fo.items():
        if n.startswith("siren."):
            assert g is not None and g.abs().sum() > 0, n
    assert not torch.allclose(g_fo["siren.theta.0"], g_so["siren.theta.0"])


def test_epoch_batches_shard_evenly_and_are_seeded(digits_store):
    from pipelines.data.labelled_images import load_labelled
    from pipelines.tasks.mwt import epoch_batches

    cfg = load_config(None, [*JOB, f"data.store={digits_store}", "run.batch_size=5"])
    data = load_labelled(cfg)
    n_train = len(data.indices("train"))
    for world in (1, 2, 3):
        shards = [epoch_batches(data, cfg, 0, r, world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1
        seen = np.concatenate([np.concatenate(s) for s in shards])
        assert len(set(seen)) == len(seen) and set(seen) <= set(data.indices("train"))
        assert len(seen) > n_train - world * 5 - world
    a, b = epoch_batches(data, cfg, 0), epoch_batches(data, cfg, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, epoch_batches(data, cfg, 0), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
