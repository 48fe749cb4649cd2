"""The built-in demo set: synthetic talking faces with speech-like audio, made here, no download.

``python -m extract.demo_media OUT_DIR [--seed S] [--clips N]`` writes::

    OUT_DIR/demo_00.mp4 … demo_NN.mp4   H.264 + AAC, 320x240, 25 fps, 2-4 s each
    OUT_DIR/demo_frames/00001.jpg …      one image-folder input (aligned 112x112 face crops)
    OUT_DIR/demo_audio.wav               one audio-only input (16 kHz mono)
    OUT_DIR/labels.csv                   video, split, emotion, valence, arousal (clip means)
    OUT_DIR/frame_labels.csv             video, split, frame, time, valence, arousal (40 ms)
    OUT_DIR/params.json                  the generating parameters of every clip

Each clip is drawn from an "emotion" with a valence/arousal target; the per-frame state moves
from neutral to the target over the first second. Valence bends the mouth (smile / frown) and
tilts the brows; arousal raises pitch level, pitch range, loudness, syllable rate, eye opening
and head motion. The mouth opens with the speech envelope, so sound and picture agree. The
same seed gives the same pictures and sound (byte-identical files).

Both label files are in the generic CSV layout ``fuse`` reads (``labels.format: csv``): a
``video`` column, a ``split`` column, numeric targets, and ``frame`` / ``time`` for the
per-frame file; ``emotion`` (a class name) is the per-video class label.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FPS = 25
WIDTH, HEIGHT = 320, 240
SAMPLE_RATE = 16000

#: emotion → (valence, arousal) target in [-1, 1].
EMOTIONS: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.8, 0.5),
    "sad": (-0.6, -0.6),
    "angry": (-0.7, 0.8),
    "calm": (0.4, -0.5),
    "fearful": (-0.5, 0.6),
}
VAL_EMOTIONS = ("angry", "happy", "sad", "calm")
#: vowel → formant frequencies F1, F2, F3 (Hz) and bandwidths.
VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
          "o": (570, 840, 2410), "u": (300, 870, 2240)}
BANDWIDTHS = (80.0, 100.0, 140.0)


@dataclass
class ClipParams:
    """What one demo clip was generated from."""

    video: str
    emotion: str
    valence: float  # target
    arousal: float  # target
    seconds: float
    split: str
    f0: float  # base pitch (Hz)
    syllable_rate: float  # syllables per second
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    seed: int


# ---------------------------------------------------------------------------- trajectories
def trajectory(target: float, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Neutral → ``target`` over the first ~second, then a slow wobble."""
    onset = 0.4 + 0.6 * rng.random()
    ramp = 1.0 - np.exp(-np.clip(times, 0, None) / (onset / 3))
    wobble = 0.08 * np.sin(2 * np.pi * (0.3 + 0.3 * rng.random()) * times + rng.random() * 6)
    return np.clip(target * ramp + wobble * abs(target), -1.0, 1.0)


def syllable_envelope(times: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Speech-like amplitude: one bump per syllable, short pauses, 0 at the very start/end."""
    n_syl = int(np.ceil(times[-1] * rate)) + 2
    starts = np.cumsum(rng.uniform(0.7, 1.3, n_syl) / rate) - 0.2
    env = np.zeros_like(times)
    for i, s in enumerate(starts):
        if rng.random() < 0.12 and i:  # a pause
            continue
        dur = 0.75 / rate
        x = (times - s) / dur
        env = np.maximum(env, np.where((x > 0) & (x < 1), np.clip(np.sin(np.pi * x), 0, 1) ** 0.7,
                                          0.0))
    edge = np.clip(np.minimum(times - 0.15, times[-1] - times - 0.1) / 0.1, 0, 1)
    return env * edge


# --------------------------------------------------------------------------------- audio
def synth_speech(p: ClipParams, valence: np.ndarray, arousal: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(wav float32, envelope) at 16 kHz; ``valence``/``arousal`` are per-sample."""
    from scipy.signal import lfilter

    n = int(round(p.seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    env = syllable_envelope(t, p.syllable_rate, rng)
    # Pitch: level and range grow with arousal; declination; a small accent per syllable.
    f0 = p.f0 * (1 + 0.25 * arousal + 0.05 * valence)
    f0 = f0 * (1 - 0.08 * t / p.seconds) * (1 + (0.06 + 0.1 * np.clip(arousal, 0, 1)) * env)
    f0 = f0 * (1 + 0.004 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1)))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    source = np.zeros(n)
    for k in range(1, int(SAMPLE_RATE / 2 / f0.min())):
        alias = k * f0 < SAMPLE_RATE / 2 - 200
        source += np.where(alias, np.sin(k * phase) / k ** 1.1, 0.0)
    source += 0.05 * rng.standard_normal(n)  # breath
    # Formants: one vowel per syllable, changed in 10 ms blocks with the filter state kept.
    vowels = list(VOWELS)
    block = SAMPLE_RATE // 100
    seq = rng.integers(0, len(vowels), int(p.seconds * p.syllable_rate) + 3)
    out = np.zeros(n)
    states = [np.zeros(2) for _ in BANDWIDTHS]
    for start in range(0, n, block):
        syl = int(start / SAMPLE_RATE * p.syllable_rate)
        formants = VOWELS[vowels[seq[min(syl, len(seq) - 1)]]]
        y = source[start:start + block]
        acc = np.zeros_like(y)
        for j, (freq, bw) in enumerate(zip(formants, BANDWIDTHS, strict=True)):
            r = np.exp(-np.pi * bw / SAMPLE_RATE)
            a = [1.0, -2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r]
            part, states[j] = lfilter([1 - r], a, y, zi=states[j])
            acc += part / (j + 1)
        out[start:start + block] = acc
    out = out * env
    out /= np.abs(out).max() + 1e-9
    # Consonant-like bursts: 30 ms of high-passed noise where a syllable starts.
    onsets = np.flatnonzero((env[1:] > 0) & (env[:-1] == 0)) + 1
    burst = np.zeros(n)
    decay = np.exp(-np.arange(int(0.03 * SAMPLE_RATE)) / (0.008 * SAMPLE_RATE))
    for o in onsets:
        seg = burst[o:o + len(decay)]
        seg += decay[:len(seg)] * np.diff(rng.standard_normal(len(seg) + 1))
    out += 0.12 * burst + 0.002 * rng.standard_normal(n)
    loudness = 0.3 * (1 + 0.6 * float(np.mean(arousal)))
    out = out / (np.abs(out).max() + 1e-9) * loudness
    return out.astype(np.float32), env


# --------------------------------------------------------------------------------- video
def draw_face(frame: np.ndarray, p: ClipParams, i: int, valence: float, arousal: float,
              mouth_open: float) -> None:
    """Draw a frontal cartoon face into ``frame`` (H, W, 3 RGB) in place."""
    import cv2

    t = i / FPS
    speed = 1.0 + 1.5 * max(arousal, 0.0)
    cx = WIDTH / 2 + 10 * np.sin(0.9 * speed * t) + 3 * np.sin(3.1 * t)
    cy = HEIGHT / 2 + 4 * np.sin(0.7 * speed * t + 1)
    tilt = 5 * np.sin(0.5 * speed * t)
    s = 1.0 + 0.03 * np.sin(0.4 * t)
    skin = tuple(int(c) for c in p.skin)
    dark = tuple(int(c * 0.55) for c in p.skin)

    def pt(x: float, y: float) -> tuple[int, int]:
        a = np.deg2rad(tilt)
        xr, yr = x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)
        return int(round(cx + s * xr)), int(round(cy + s * yr))

    aa = cv2.LINE_AA
    cv2.ellipse(frame, pt(0, -20), (int(62 * s), int(60 * s)), tilt, 180, 360, (60, 40, 30), -1,
                aa)  # hair
    cv2.ellipse(frame, pt(-60, 5), (9, 16), tilt, 0, 360, dark, -1, aa)  # ears
    cv2.ellipse(frame, pt(60, 5), (9, 16), tilt, 0, 360, dark, -1, aa)
    cv2.ellipse(frame, pt(0, 5), (int(58 * s), int(75 * s)), tilt, 0, 360, skin, -1, aa)
    eye_h = 5.0 + 3.0 * arousal
    for side in (-1, 1):
        ex = side * 22
        cv2.ellipse(frame, pt(ex, -10), (11, max(2, int(eye_h + 1))), tilt, 0, 360,
                    (245, 245, 240), -1, aa)
        cv2.circle(frame, pt(ex, -10), 5, (70, 50, 30), -1, aa)
        cv2.circle(frame, pt(ex, -10), 2, (10, 10, 10), -1, aa)
        # Brows: inner ends down with anger (negative valence, high arousal), up with sadness.
        anger = max(0.0, -valence) * max(0.0, arousal)
        sadness = max(0.0, -valence) * max(0.0, -arousal)
        inner = -28 + 9 * anger - 7 * sadness - 3 * max(arousal, 0.0)
        outer = -28 - 2 * arousal
        cv2.line(frame, pt(side * 10, inner), pt(side * 34, outer), (50, 35, 25), 4, aa)
    shade = tuple(int(c * 0.8) for c in p.skin)
    cv2.ellipse(frame, pt(0, 8), (6, 14), tilt, 0, 360, shade, -1, aa)  # nose ridge
    cv2.ellipse(frame, pt(0, 16), (10, 5), tilt, 0, 180, dark, 2, aa)  # nose base
    for side in (-1, 1):
        cv2.circle(frame, pt(side * 4, 19), 2, dark, -1, aa)  # nostrils
    # Mouth: corners lifted with valence; opening follows the speech envelope.
    width = 26 + 4 * valence
    curve = 10 * valence  # > 0: corners above the centre (smile)
    open_h = 2 + 14 * mouth_open * (0.6 + 0.4 * (arousal + 1) / 2)
    xs = np.linspace(-width, width, 21)
    shape = 1 - (xs / width) ** 2  # 1 at the centre, 0 at the corners
    centre = 45 - curve * (1 - shape)
    upper = centre - open_h / 2 * shape
    lower = centre + open_h / 2 * shape
    upper_pts = [pt(x, y) for x, y in zip(xs, upper, strict=True)]
    lower_pts = [pt(x, y) for x, y in zip(xs[::-1], lower[::-1], strict=True)]
    cv2.fillPoly(frame, [np.array(upper_pts + lower_pts, np.int32)], (90, 20, 30), aa)
    cv2.polylines(frame, [np.array(upper_pts, np.int32)], False, (150, 60, 60), 3, aa)
    cv2.polylines(frame, [np.array(lower_pts, np.int32)], False, (150, 60, 60), 3, aa)


def background(p: ClipParams, rng: np.random.Generator) -> np.ndarray:
    """A soft gradient with a little texture (fixed per clip)."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] / max(WIDTH, HEIGHT)
    base = np.array(p.background, np.float32)
    img = base[None, None] * (0.8 + 0.3 * yy[..., None]) + 15 * xx[..., None]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_frames(p: ClipParams, valence: np.ndarray, arousal: np.ndarray,
                  mouth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bg = background(p, rng)
    frames = np.empty((len(valence), HEIGHT, WIDTH, 3), np.uint8)
    for i in range(len(valence)):
        frame = bg.copy()
        draw_face(frame, p, i, float(valence[i]), float(arousal[i]), float(mouth[i]))
        frames[i] = frame
    return frames


# --------------------------------------------------------------------------------- files
def encode_frames(container: Any, stream: Any, frames: Iterable[np.ndarray], fps: int) -> None:
    """Encode RGB frames (H, W, 3) uint8 into a PyAV video ``stream`` at ``i / fps`` and flush
    it."""
    import av

    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_mp4(path: Path, frames: np.ndarray, wav: np.ndarray) -> None:
    """H.264 (yuv420p, single-threaded: deterministic) + AAC mono 16 kHz."""
    import av

    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vs.codec_context.options = {"threads": "1", "crf": "23", "preset": "medium"}
        au = c.add_stream("aac", rate=SAMPLE_RATE)
        au.layout = "mono"
        encode_frames(c, vs, frames, FPS)
        step = au.codec_context.frame_size or 1024
        for start in range(0, len(wav), step):
            chunk = np.ascontiguousarray(wav[None, start:start + step])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            for packet in au.encode(frame):
                c.mux(packet)
        for packet in au.encode():
            c.mux(packet)


def write_wav(path: Path, wav: np.ndarray) -> None:
    import wave

    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def write_frames(folder: Path, frames: np.ndarray, size: int = 112) -> None:
    """Square crops centred on the face, resized to ``size``: an aligned-crops folder."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    half = 80
    cy, cx = HEIGHT // 2 + 5, WIDTH // 2
    for i, f in enumerate(frames, start=1):
        crop = f[cy - half:cy + half, cx - half:cx + half]
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), crop[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 92])


# ---------------------------------------------------------------------------------- main
def clip_params(index: int, n_clips: int, seed: int, rng: np.random.Generator,
                name: str | None = None) -> ClipParams:
    n_val = max(1, n_clips // 4)
    split = "val" if index >= n_clips - n_val else "train"
    if split == "train":
        emotion = list(EMOTIONS)[index % len(EMOTIONS)]
    else:  # contrasting held-out clips
        emotion = VAL_EMOTIONS[(index - (n_clips - n_val)) % len(VAL_EMOTIONS)]
    valence, arousal = EMOTIONS[emotion]
    return ClipParams(
        video=name or f"demo_{index:02d}", emotion=emotion, valence=valence, arousal=arousal,
        seconds=round(float(rng.uniform(2.0, 4.0)), 2), split=split,
        f0=float(rng.choice([110.0, 125.0, 190.0, 210.0])),
        syllable_rate=float(4.0 + 1.2 * arousal + rng.uniform(-0.3, 0.3)),
        skin=tuple(int(c) for c in rng.choice([[225, 180, 150], [200, 150, 115],
                                                [160, 110, 80], [235, 195, 170]])),
        background=tuple(int(c) for c in rng.integers(60, 200, 3)), seed=seed)


def make_clip(p: ClipParams, rng: np.random.Generator) -> dict:
    """Trajectories, audio, frames and per-frame labels of one clip."""
    n_frames = int(round(p.seconds * FPS))
    t_frames = np.arange(n_frames) / FPS
    t_audio = np.arange(int(round(p.seconds * SAMPLE_RATE))) / SAMPLE_RATE
    val_f = trajectory(p.valence, t_frames, rng)
    aro_f = trajectory(p.arousal, t_frames, rng)
    val_a = np.interp(t_audio, t_frames, val_f)
    aro_a = np.interp(t_audio, t_frames, aro_f)
    wav, env = synth_speech(p, val_a, aro_a, rng)
    mouth = np.interp(t_frames, t_audio, env)
    return {"wav": wav, "times": t_frames, "valence": val_f, "arousal": aro_f, "mouth": mouth}


def make_demo(out_dir: str | Path, seed: int = 0, n_clips: int = 8) -> Path:
    """Write the demo set into ``out_dir`` (created); returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels, frame_rows, params = [], [], []
    specs = [clip_params(i, n_clips, seed, rng) for i in range(n_clips)]
    specs.append(clip_params(1, n_clips, seed, rng, name="demo_frames"))  # happy, image folder
    specs[-1].split = "train"
    specs.append(clip_params(2, n_clips, seed, rng, name="demo_audio"))  # sad, audio only
    specs[-1].split = "train"
    for p in specs:
        clip = make_clip(p, np.random.default_rng([seed, len(params)]))
        if p.video == "demo_audio":
            write_wav(out / f"{p.video}.wav", clip["wav"])
        else:
            frames = render_frames(p, clip["valence"], clip["arousal"], clip["mouth"],
                                   np.random.default_rng([seed, len(params), 1]))
            if p.video == "demo_frames":
                write_frames(out / p.video, frames)
            else:
                write_mp4(out / f"{p.video}.mp4", frames, clip["wav"])
        labels.append({"video": p.video, "split": p.split, "emotion": p.emotion,
                       "valence": round(float(clip["valence"].mean()), 4),
                       "arousal": round(float(clip["arousal"].mean()), 4)})
        frame_rows += [{"video": p.video, "split": p.split, "frame": i,
                        "time": round(float(t), 3), "valence": round(float(v), 4),
                        "arousal": round(float(a), 4)}
                       for i, (t, v, a) in enumerate(zip(clip["times"], clip["valence"],
                                                         clip["arousal"], strict=True))]
        params.append(asdict(p))
        log.info("wrote %s (%s, %.1f s)", p.video, p.emotion, p.seconds)
    _write_csv(out / "labels.csv", labels)
    _write_csv(out / "frame_labels.csv", frame_rows)
    (out / "params.json").write_text(json.dumps(params, indent=1) + "\n")
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extract.demo_media",
                                     description="Write the synthetic demo set (talking "
                                     "faces with speech-like audio, labels) into OUT_DIR.")
    parser.add_argument("out_dir", nargs="?", help="output folder (created)")
    parser.add_argument("--out", dest="out_opt", help="same as OUT_DIR")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--clips", type=int, default=8, help="number of video clips (default 8)")
    args = parser.parse_args(argv)
    out = args.out_dir or args.out_opt
    if not out:
        parser.error("give OUT_DIR")
    if args.clips < 2:
        parser.error(f"--clips must be at least 2, got {args.clips}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(make_demo(out, args.seed, args.clips))


if __name__ == "__main__":
    main()
