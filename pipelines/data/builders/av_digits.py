"""av-digits: audio-visual digits (AV-MNIST style): digit images paired with spoken digits.

Images are scikit-learn's ``load_digits`` (1797 handwritten 8x8 digits, values 0..16),
upsampled bilinearly to ``--image-size`` (28 by default, AV-MNIST's 28x28; ``8`` keeps
the originals). Audio is the digit word ("zero".."nine") synthesised offline with
``espeak-ng`` in several English voices, each with ``--jitters`` seeded speed/pitch
variants, resampled to ``--sample-rate`` Hz, silence-trimmed, peak-normalised and
centred in a ``--duration`` window (1 s = 2000 samples by default).

Only the (digit, voice, jitter) clips actually drawn are synthesised, once each
(at most 10 x voices x jitters ``espeak-ng`` calls, a few seconds); every image gets a
clip of its own label drawn with a seeded RNG. Modalities: ``image`` (H x W x 1,
``minmax01``) and ``audio`` (T x 1, ``minmax11``). Side arrays at the store root:
``labels`` (digit), ``image_index`` (row of ``load_digits``), ``voice`` and ``jitter``
(which clip). Split: seeded 80/10/10.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from math import gcd

import numpy as np

from pipelines.data.stores import ModalityData, StoreLocation, write_signal_store

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_VOICES = "en-us,en-gb,en-gb-scotland,en-029,en-us+f3,en-gb+f4"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    p.add_argument("--num", type=int, default=None, help="use N images (seeded subset)")
    p.add_argument("--image-size", type=int, default=28, help="image side (8 keeps 8x8)")
    p.add_argument("--voices", default=DEFAULT_VOICES, help="espeak-ng voices, comma separated")
    p.add_argument("--jitters", type=int, default=3, help="speed/pitch variants per voice")
    p.add_argument("--sample-rate", type=int, default=2000, help="audio rate (Hz)")
    p.add_argument("--duration", type=float, default=1.0, help="clip length (s)")
    p.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable")
    p.add_argument("--seed", type=int, default=0)


def synthesise(
    exe: str, word: str, voice: str, speed: int, pitch: int, rate: int, length: int
) -> np.ndarray:
    """Speak ``word`` with espeak-ng; return ``(length,)`` float32 audio peaking at 1.

    Raises:
        ValueError: espeak-ng failed (unknown voice) or produced silence.
    """
    from scipy.signal import resample_poly

    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word]
    res = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if res.returncode != 0 or len(res.stdout) < 64:
        msg = res.stderr.decode(errors="replace").strip()
        raise ValueError(f"espeak-ng failed for voice {voice!r} word {word!r}: {msg}")
    # Streamed WAV: the header's frame count is bogus, so read whatever frames follow.
    with wave.open(io.BytesIO(res.stdout)) as w:
        src_rate, width, chans = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(len(res.stdout))
    if width != 2:
        raise ValueError(f"espeak-ng produced {8 * width}-bit audio; expected 16-bit PCM")
    x = np.frombuffer(raw, "<i2").astype(np.float64).reshape(-1, chans).mean(1)
    g = gcd(rate, src_rate)
    x = resample_poly(x, rate // g, src_rate // g)
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max()) if x.size else []
    if len(loud) == 0:
        raise ValueError(f"espeak-ng produced silence for voice {voice!r} word {word!r}")
    x = x[loud[0] : loud[-1] + 1][:length]
    x = x / np.abs(x).max()
    out = np.zeros(length, np.float32)
    start = (length - x.size) // 2
    out[start : start + x.size] = x
    return out


def _split(n: int, rng: np.random.Generator) -> np.ndarray:
    """Seeded 80/10/10 assignment (0 train, 1 val, 2 test)."""
    split = np.zeros(n, np.int8)
    order = rng.permutation(n)
    n_val, n_test = int(round(0.1 * n)), int(round(0.1 * n))
    split[order[:n_val]] = 1
    split[order[n_val : n_val + n_test]] = 2
    return split


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Load the images, synthesise the clips, pair them and write the store."""
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    exe = shutil.which(args.espeak)
    if exe is None:
        raise FileNotFoundError(
            f"{args.espeak!r} not found: the audio is synthesised with espeak-ng; install it "
            "with `apt-get install espeak-ng` (scripts/setup.sh does so when run as root)"
        )
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    if not voices or args.jitters < 1 or args.image_size < 1 or args.sample_rate < 100:
        raise ValueError("need >= 1 voice, --jitters >= 1, --image-size >= 1, --sample-rate >= 100")
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    digits = load_digits()
    total = len(digits.target)
    num = total if args.num is None else min(args.num, total)
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    index = np.sort(rng.permutation(total)[:num]) if num < total else np.arange(total)
    labels = digits.target[index].astype(np.int64)
    images = digits.images[index].astype(np.float64)
    size = args.image_size
    if size != images.shape[1]:
        images = resize(images, (num, size, size), order=1, mode="edge", anti_aliasing=False)
    images = np.clip(images, 0.0, 16.0)[..., None]

    # Jitter table: speed (words/min) and pitch (0..99) per (digit, voice, jitter).
    speeds = rng.integers(130, 200, size=(10, len(voices), args.jitters))
    pitches = rng.integers(25, 75, size=(10, len(voices), args.jitters))
    voice = rng.integers(0, len(voices), size=num)
    jitter = rng.integers(0, args.jitters, size=num)
    length = int(round(args.sample_rate * args.duration))
    drawn = [(int(d), int(v), int(j)) for d, v, j in zip(labels, voice, jitter, strict=True)]
    keys = sorted(set(drawn))

    def one(key: tuple[int, int, int]) -> np.ndarray:
        d, v, j = key
        return synthesise(
            exe, WORDS[d], voices[v], int(speeds[key]), int(pitches[key]), args.sample_rate, length
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        clips = dict(zip(keys, pool.map(one, keys), strict=True))
    t_audio = time.perf_counter() - t0
    audio = np.stack([clips[k] for k in drawn])
    split = _split(num, rng)
    data = {
        "image": ModalityData(images, "grid", [[0.0, 1.0], [0.0, 1.0]], normalisation="minmax01"),
        "audio": ModalityData(
            audio[..., None], "grid", [[0.0, args.duration]], normalisation="minmax11"
        ),
    }
    attrs = {
        "source": "av_digits",
        "seed": args.seed,
        "images": "sklearn.datasets.load_digits",
        "image_size": size,
        "words": list(WORDS),
        "voices": voices,
        "jitters": args.jitters,
        "espeak_speed": speeds.tolist(),
        "espeak_pitch": pitches.tolist(),
        "sample_rate": args.sample_rate,
    }
    extra = {
        "labels": labels,
        "image_index": index.astype(np.int64),
        "voice": voice,
        "jitter": jitter,
    }
    write_signal_store(location, data, split, None, attrs, args.chunk, extra_arrays=extra)
    return {
        "signals": num,
        "modalities": {"image": [size, size, 1], "audio": [length, 1]},
        "split": {n: int((split == i).sum()) for i, n in enumerate(("train", "val", "test"))},
        "clips_synthesised": len(keys),
        "audio_seconds": round(t_audio, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }
