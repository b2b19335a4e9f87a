"""images builder: aligned modality folders and scikit-image samples, through the CLI."""

import json

import numpy as np
import pytest
from skimage.io import imsave

from pipelines.data.builders.__main__ import main
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.writer import invert_norm

NAMES = ["a", "b", "c", "d", "e"]


@pytest.fixture
def folder(tmp_path):
    """rgb/ (colour jpg-free pngs, one grayscale), gray/, mask/ (labels); 'f' lacks a mask."""
    root = tmp_path / "celeb"
    for sub in ("rgb", "gray", "mask"):
        (root / sub).mkdir(parents=True)
    for i, name in enumerate([*NAMES, "f"]):
        colour = np.array([40 * i, 255 - 40 * i, 128], np.uint8)
        rgb = np.broadcast_to(colour, (30, 40, 3)).copy()
        if name == "b":
            rgb = rgb[..., 0]  # a grayscale file inside a colour modality
        imsave(root / "rgb" / f"{name}.png", rgb, check_contrast=False)
        gray = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
        imsave(root / "gray" / f"{name}.jpeg", gray, check_contrast=False)
        if name != "f":
            mask = np.zeros((30, 40), np.uint8)
            mask[:, 20:] = 100 + 50 * (i % 2)
            imsave(root / "mask" / f"{name}.png", mask, check_contrast=False)
    (root / "mask" / "notes.txt").write_text("ignored")
    return root


def test_aligned_folder_round_trip(folder, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    argv = ["images", "--out", str(out), "--folder", str(folder), "--size", "16", "--chunk", "2"]
    assert main([*argv, "--normalisation", "none", "--nearest", "mask"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["signals"] == 5 and summary["incomplete"] == 1
    assert summary["incomplete_examples"] == {"f": ["mask"]}
    store = open_store(make_location(str(out)))
    assert store.modalities == ["gray", "mask", "rgb"]
    assert {m: store.info[m].channels for m in store.modalities} == {"gray": 1, "mask": 1, "rgb": 3}
    assert all(store.info[m].grid_shape == (16, 16) for m in store.modalities)
    assert store.attrs["names"] == NAMES and store.chunk_size == 2
    assert np.bincount(store.split, minlength=3).sum() == 5
    vals = store.read(0, 5)
    for i in (0, 2, 3, 4):  # constant colours survive resizing exactly
        expect = np.array([40 * i, 255 - 40 * i, 128]) / 255.0
        np.testing.assert_allclose(vals["rgb"][i], np.broadcast_to(expect, (256, 3)), atol=1e-6)
    b = vals["rgb"][1]
    np.testing.assert_array_equal(b[:, 0], b[:, 1])  # grayscale replicated to 3 channels
    levels = np.array([0, 100, 150]) / 255.0  # nearest neighbour keeps label values
    assert np.isclose(vals["mask"].reshape(-1, 1), levels).any(1).all()
    assert 0.0 <= vals["gray"].min() < 0.1 and 0.9 < vals["gray"].max() <= 1.0


def test_minmax_normalisation_and_subset(folder, tmp_path):
    out = tmp_path / "s.zarr"
    argv = ["images", "--out", str(out), "--folder", str(folder), "--modalities", "rgb,gray"]
    assert main([*argv, "--size", "8", "--num", "3"]) == 0
    store = open_store(make_location(str(out)))
    assert store.modalities == ["rgb", "gray"] and store.num_signals == 3
    vals = store.read(0, 3)
    train = store.split == 0
    assert store.info["rgb"].norm["kind"] == "minmax01"
    assert vals["gray"][train].min() == 0.0 and vals["gray"][train].max() == 1.0


def test_corrupt_image_names_the_file(folder, tmp_path, capsys):
    (folder / "rgb" / "c.png").write_bytes(b"this is not a png")
    argv = ["images", "--out", str(tmp_path / "s.zarr"), "--folder", str(folder), "--size", "8"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "c.png" in err and "cannot read image" in err


def test_missing_modality_folder(folder, tmp_path, capsys):
    argv = ["images", "--out", str(tmp_path / "s"), "--folder", str(folder), "--modalities", "x"]
    assert main(argv) == 2
    assert "'x'" in capsys.readouterr().err


def test_skimage_samples(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    argv = ["images", "--out", str(out), "--skimage-samples", "--num", "4", "--size", "16"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["signals"] == 4
    store = open_store(make_location(str(out)))
    assert store.modalities == ["rgb", "gray", "edges"]
    assert [store.info[m].channels for m in store.modalities] == [3, 1, 1]
    assert store.attrs["names"] == ["astronaut", "brick", "camera", "cat"]
    vals = store.read(0, 4)
    rgb = invert_norm(vals["rgb"], store.info["rgb"].norm)  # per-channel stats differ
    np.testing.assert_allclose(rgb[1][:, 0], rgb[1][:, 2], atol=1e-6)  # grayscale brick
    assert not np.allclose(rgb[0][:, 0], rgb[0][:, 2], atol=0.05)  # astronaut in colour
    assert (vals["edges"].std(1) > 0.01).all()
    train = store.split == 0
    for m in store.modalities:
        assert vals[m][train].min() >= 0.0 and vals[m][train].max() <= 1.0


def test_tiles_cut_at_native_resolution_and_split_by_source_image(folder, tmp_path, capsys):
    """30 x 40 images of 6 names give 2 x 2 tiles of 15 x 15 each; a tile is kept or
    dropped by its first modality's spread (rgb/ images are one flat colour)."""
    out = tmp_path / "t.zarr"
    argv = ["images", "--out", str(out), "--folder", str(folder), "--modalities", "gray,rgb"]
    argv += ["--tiles", "--size", "15", "--min-std", "0", "--seed", "3"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["signals"] == 6 * 4 and summary["source_images"] == 6
    assert summary["flat_tiles_dropped"] == 0
    store = open_store(make_location(str(out)))
    names = store.attrs["names"]
    assert sorted(names)[:4] == ["a_0_0", "a_0_1", "a_1_0", "a_1_1"]
    assert names != sorted(names)  # stored in a seeded random order
    by_image = {}
    for name, s in zip(names, store.split, strict=True):
        by_image.setdefault(name.split("_")[0], set()).add(int(s))
    assert all(len(s) == 1 for s in by_image.values())  # one split per source image
    gray = invert_norm(store.read(0, 24)["gray"], store.info["gray"].norm).reshape(24, 15, 15)
    ramp = np.linspace(0, 255, 40) / 255.0  # a tile is the image's own pixels, not resized
    np.testing.assert_allclose(gray[names.index("a_0_0")][0], ramp[:15], atol=0.02)
    np.testing.assert_allclose(gray[names.index("c_1_1")][0], ramp[15:30], atol=0.02)
    flat = ["images", "--out", str(tmp_path / "f.zarr"), "--folder", str(folder)]
    flat += ["--modalities", "rgb", "--tiles", "--size", "15"]
    assert main(flat) == 2  # every rgb tile is one flat colour
    assert "no 15 x 15 tile" in capsys.readouterr().err
