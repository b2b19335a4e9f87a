"""av-digits builder: CLI round trip, pairing of images/labels/audio, espeak-ng errors."""

import shutil

import numpy as np
import pytest
from skimage.transform import resize
from sklearn.datasets import load_digits

from pipelines.data.builders.__main__ import main
from pipelines.data.stores import make_location, open_store

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("av") / "av.zarr"
    argv = ["av-digits", "--out", str(out), "--num", "40", "--voices", "en-us,en-gb"]
    assert main([*argv, "--jitters", "2", "--chunk", "16", "--seed", "3"]) == 0
    return open_store(make_location(str(out)))


@needs_espeak
def test_shapes_ranges_and_split(store):
    assert store.modalities == ["image", "audio"]
    assert store.info["image"].grid_shape == (28, 28) and store.info["image"].channels == 1
    assert store.info["audio"].grid_shape == (2000,) and store.info["audio"].channels == 1
    assert store.info["audio"].norm["kind"] == "minmax11"
    assert store.chunk_size == 16 and store.num_signals == 40
    assert np.bincount(store.split, minlength=3).tolist() == [32, 4, 4]
    vals = store.read(0, 40)
    assert vals["image"].shape == (40, 784, 1) and vals["audio"].shape == (40, 2000, 1)
    train = store.split == 0
    assert vals["image"][train].min() == 0.0 and vals["image"][train].max() == 1.0
    assert -1.01 <= vals["audio"].min() <= -0.5 and 0.5 <= vals["audio"].max() <= 1.01


@needs_espeak
def test_labels_match_images(store):
    digits = load_digits()
    labels = np.asarray(store.group["labels"][...])
    index = np.asarray(store.group["image_index"][...])
    assert len(set(index.tolist())) == 40
    np.testing.assert_array_equal(labels, digits.target[index])
    expect = resize(digits.images[index], (40, 28, 28), order=1, mode="edge", anti_aliasing=False)
    got = store.read(0, 40)["image"][..., 0].reshape(40, 28, 28)
    np.testing.assert_allclose(got, np.clip(expect, 0, 16) / 16.0, atol=1e-5)


@needs_espeak
def test_audio_non_silent_and_varies_by_voice(store):
    audio = store.read(0, 40)["audio"][..., 0]
    labels = np.asarray(store.group["labels"][...])
    voice = np.asarray(store.group["voice"][...])
    jitter = np.asarray(store.group["jitter"][...])
    assert (audio.std(1) > 0.05).all() and (np.abs(audio).max(1) > 0.9).all()
    assert store.attrs["voices"] == ["en-us", "en-gb"]
    compared = same = 0
    for i in range(40):
        for j in range(i + 1, 40):
            if labels[i] != labels[j]:
                continue
            if voice[i] != voice[j]:
                assert np.abs(audio[i] - audio[j]).max() > 0.2
                compared += 1
            elif jitter[i] == jitter[j]:  # one cached clip per (digit, voice, jitter)
                np.testing.assert_array_equal(audio[i], audio[j])
                same += 1
    assert compared > 0 and same > 0


@needs_espeak
def test_native_size_and_determinism(tmp_path):
    outs = [tmp_path / "a.zarr", tmp_path / "b.zarr"]
    for out in outs:
        argv = ["av-digits", "--out", str(out), "--num", "10", "--image-size", "8"]
        assert main([*argv, "--voices", "en-us", "--jitters", "1"]) == 0
    a, b = (open_store(make_location(str(o))) for o in outs)
    assert a.info["image"].grid_shape == (8, 8)
    for m in ("image", "audio"):
        np.testing.assert_array_equal(a.read(0, 10)[m], b.read(0, 10)[m])
    digits = load_digits()
    idx = np.asarray(a.group["image_index"][...])
    np.testing.assert_allclose(
        a.read(0, 10)["image"][..., 0], digits.images[idx].reshape(10, 64) / 16.0, atol=1e-6
    )


def test_missing_espeak_names_the_fix(tmp_path, capsys):
    argv = ["av-digits", "--out", str(tmp_path / "x"), "--num", "5"]
    assert main([*argv, "--espeak", str(tmp_path / "no-espeak-ng")]) == 2
    assert "apt-get install espeak-ng" in capsys.readouterr().err


@needs_espeak
def test_unknown_voice_is_reported(tmp_path, capsys):
    argv = ["av-digits", "--out", str(tmp_path / "x"), "--num", "3", "--voices", "xx-nope"]
    assert main(argv) == 2
    assert "xx-nope" in capsys.readouterr().err
