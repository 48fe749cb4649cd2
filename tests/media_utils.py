"""Small synthetic media for tests, written with PyAV (no network, no fixtures on disk)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def face_frame(i: int, width: int = 96, height: int = 72, seed: int = 0,
               face: bool = True) -> np.ndarray:
    """A cheap face-like RGB frame (skin ellipse, dark eyes, a mouth) that moves with ``i``."""
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (40 + 10 * seed % 50, 60, 90)
    if not face:
        return frame
    cx = width / 2 + 3 * np.sin(i / 5.0)
    cy = height / 2
    head = ((xx - cx) / (0.3 * width)) ** 2 + ((yy - cy) / (0.42 * height)) ** 2 <= 1
    frame[head] = (224, 172, 140)
    for ex in (cx - 0.12 * width, cx + 0.12 * width):
        eye = ((xx - ex) / (0.04 * width)) ** 2 + ((yy - cy + 0.1 * height) / 3) ** 2 <= 1
        frame[eye] = (30, 30, 30)
    mouth = (np.abs(xx - cx) < 0.1 * width) & (np.abs(yy - cy - 0.2 * height) < 1 + i % 4)
    frame[mouth] = (150, 40, 40)
    return frame


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 220.0,
         seed: int = 0) -> np.ndarray:
    """(channels, S) float32 voiced-ish test signal: a harmonic tone with a little noise."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3)) * 0.2
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(len(t))
    return np.repeat(x[None, :].astype(np.float32), channels, axis=0)


def write_video(path: str | Path, n_frames: int = 25, fps: int = 25,
                size: tuple[int, int] = (96, 72), audio: bool = True, audio_rate: int = 44100,
                audio_channels: int = 2,
                pts_ms: list[int] | None = None, seed: int = 0, codec: str = "libx264",
                no_face: tuple[int, ...] = ()) -> Path:
    """A video (container from the suffix: mp4 / mkv) with optional AAC audio.

    ``pts_ms`` gives explicit frame times in milliseconds (variable frame rate); the stream's
    time base is then 1/1000. Frames whose index is in ``no_face`` show only background.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.options = {"threads": "1"}
        if pts_ms is not None:
            vs.codec_context.time_base = Fraction(1, 1000)
        as_ = None
        if audio:
            as_ = c.add_stream("aac", rate=audio_rate)
            as_.layout = "stereo" if audio_channels == 2 else "mono"
        for i in range(n_frames):
            rgb = face_frame(i, width, height, seed, face=i not in no_face)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[i]), Fraction(1, 1000)
            else:
                frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in vs.encode(frame):
                c.mux(packet)
        for packet in vs.encode():
            c.mux(packet)
        if as_ is not None:
            seconds = (pts_ms[-1] / 1000 + 0.04) if pts_ms is not None else n_frames / fps
            _encode_audio(c, as_, tone(seconds, audio_rate, audio_channels, seed=seed))
    return path


def _encode_audio(container, stream, samples: np.ndarray) -> None:
    import av

    layout = "stereo" if samples.shape[0] == 2 else "mono"
    frame_size = stream.codec_context.frame_size or 1024
    for start in range(0, samples.shape[1], frame_size):
        chunk = np.ascontiguousarray(samples[:, start:start + frame_size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = stream.codec_context.sample_rate
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_audio(path: str | Path, seconds: float = 2.0, rate: int = 44100, channels: int = 2,
                seed: int = 0) -> Path:
    """A WAV (pcm_s16le) or M4A (aac) file from the suffix."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = tone(seconds, rate, channels, seed=seed)
    layout = "stereo" if channels == 2 else "mono"
    if path.suffix == ".wav":
        with av.open(str(path), "w") as c:
            s = c.add_stream("pcm_s16le", rate=rate)
            s.layout = layout
            pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="s16",
                                               layout=layout)
            frame.sample_rate = rate
            for packet in s.encode(frame):
                c.mux(packet)
            for packet in s.encode():
                c.mux(packet)
        return path
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        s.layout = layout
        _encode_audio(c, s, samples)
    return path


def write_image_folder(folder: str | Path, n_frames: int = 10, size: int = 64, start: int = 1,
                       skip: tuple[int, ...] = ()) -> Path:
    """Frames ``00001.jpg``… of an aligned face (index ``start`` onwards, ``skip`` left out)."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n_frames):
        if i in skip:
            continue
        rgb = face_frame(i, size, size)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), rgb[:, :, ::-1])
    return folder


def truncate(path: str | Path, keep: float = 0.4) -> Path:
    """Cut a file to ``keep`` of its bytes (a download that stopped half-way)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_garbage(path: str | Path, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a media suffix (a file no decoder can open)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path
