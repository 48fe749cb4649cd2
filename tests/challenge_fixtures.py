"""Mini Aff-Wild2 and Hume-Reaction data sets in the challenges' own layouts, made by the tests.

``make_affwild2(root)``::

    videos/vidA.mp4 (25 fps) vidB.mkv (30 fps, two persons) vidC.mp4 (30 fps) vidD.mp4 (25 fps)
    cropped_aligned/vidA, vidB_left, vidB_right, vidC, vidD   00001.jpg … with gaps (no face)
    annotations/{VA_Estimation_Challenge,EXPR_Classification_Challenge,AU_Detection_Challenge}/
        {Train_Set,Validation_Set}/<id>.txt                  vidD (test) has no annotations

``make_hume(root)``: ``hume/videos/<File_ID>.mp4``, ``hume/data_info.csv`` (bracketed ids,
seven intensities; test ids without labels), ``hume/partition.csv``.

``readme_commands(section)``: the shell commands of a README section, as argument lists.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from media_utils import write_image_folder, write_video

REPO = Path(__file__).resolve().parents[1]

# name: (fps, frames, split, {crop folder: image indices left out (1-based)})
AFFWILD2 = {
    "vidA": (25, 60, "train", {"vidA": (1, 2, 3, *range(20, 28), 58, 59, 60)}),
    "vidB": (30, 72, "train", {"vidB_left": (1, *range(30, 36), 72),
                               "vidB_right": (*range(10, 14), *range(66, 73))}),
    "vidC": (30, 66, "val", {"vidC": (1, 2, *range(33, 41), 66)}),
    "vidD": (25, 50, "test", {"vidD": (*range(1, 6), *range(24, 30), 50)}),
}
EXTRA_LINES = {"vidC": 1}  # an annotation file one line longer than its video (ignored)
FOLDERS = {"train": "Train_Set", "val": "Validation_Set"}


@dataclass
class AffWild2:
    root: Path
    frames: dict[str, int] = field(default_factory=dict)  # label / crop id -> video frames
    labelled: list[str] = field(default_factory=list)  # ids with annotation files


def make_affwild2(root: Path, seed: int = 0) -> AffWild2:
    """Write the mini Aff-Wild2 under ``root`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out = AffWild2(root)
    for k, (name, (fps, n, split, crops)) in enumerate(AFFWILD2.items()):
        suffix = ".mkv" if name == "vidB" else ".mp4"
        write_video(root / "videos" / f"{name}{suffix}", n, fps=fps, seed=k)
        for folder, skip in crops.items():
            write_image_folder(root / "cropped_aligned" / folder, n, size=64, skip=skip)
            out.frames[folder] = n
            if split == "test":
                continue
            out.labelled.append(folder)
            lines = n + EXTRA_LINES.get(name, 0)
            _annotations(root / "annotations", FOLDERS[split], folder, lines, rng)
    return out


def _annotations(root: Path, split: str, vid: str, n: int, rng: np.random.Generator) -> None:
    t = np.arange(n)
    va = np.stack([np.sin(t / 9.0), np.cos(t / 13.0)], axis=1) * 0.8
    va[rng.random(n) < 0.1] = -5  # invalid frames
    expr = (t // 15 % 8).astype(int)[:, None]
    expr[rng.random(n) < 0.1] = -1
    au = (rng.random((n, 12)) < 0.3).astype(int)
    au[rng.random(n) < 0.1] = -1
    files = {"VA_Estimation_Challenge": ("valence,arousal", va, "%.3f"),
             "EXPR_Classification_Challenge": (
                 "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other", expr, "%d"),
             "AU_Detection_Challenge": (
                 "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26", au, "%d")}
    for task, (header, values, fmt) in files.items():
        path = root / task / split / f"{vid}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, values, fmt=fmt, delimiter=",", header=header, comments="")


HUME_SPLITS = ["Train"] * 6 + ["Val"] * 2 + ["Test"] * 2


def make_hume(root: Path, seed: int = 0) -> list[str]:
    """Write the mini Hume-Reaction under ``root / "hume"``; returns the test ids."""
    from extract.demo_media import clip_params, make_clip, render_frames, write_mp4

    hume = root / "hume"
    (hume / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    info, parts, tests = [], [], []
    for k, split in enumerate(HUME_SPLITS):
        vid = f"{k:05d}"
        p = clip_params(k, len(HUME_SPLITS), seed, rng, name=vid)
        p.seconds = 2.0
        clip = make_clip(p, np.random.default_rng([seed, k]))
        frames = render_frames(p, clip["valence"], clip["arousal"], clip["mouth"],
                               np.random.default_rng([seed, k, 1]))
        write_mp4(hume / "videos" / f"{vid}.mp4", frames, clip["wav"])
        parts.append(f"[{vid}],{split}")
        if split == "Test":
            tests.append(f"[{vid}]")
        else:
            y = np.clip([(p.arousal + 1) / 2, (p.valence + 1) / 2, *rng.random(5)], 0, 1)
            info.append(f"[{vid}]," + ",".join(f"{v:.4f}" for v in y))
    header = "File_ID,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise"
    (hume / "data_info.csv").write_text(header + "\n" + "\n".join(info) + "\n")
    (hume / "partition.csv").write_text("File_ID,Split\n" + "\n".join(parts) + "\n")
    return tests


def readme_commands(section: str, readme: Path = REPO / "README.md") -> list[list[str]]:
    """Every command of the ```bash blocks under the README heading starting ``section``."""
    text = readme.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 3)
    body = text[start : end if end > 0 else None]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def write_av(path: Path, frames: np.ndarray, fps: int, wav: np.ndarray,
             rate: int = 16000) -> Path:
    """An H.264 video of ``frames`` (N, H, W, 3) at ``fps`` with mono AAC audio ``wav``."""
    import av
    from media_utils import _encode_audio

    from extract.demo_media import encode_frames

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.codec_context.options = {"threads": "1"}
        au = c.add_stream("aac", rate=rate)
        au.layout = "mono"
        encode_frames(c, vs, frames, fps)
        _encode_audio(c, au, wav[None, :].astype(np.float32))
    return path
