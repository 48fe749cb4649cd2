"""Check a submission in a challenge's own format before it is sent.

- Aff-Wild2 (``va``, ``expr``, ``au``): a folder of ``<video>.txt``; line 1 is the task's
  header, then exactly one line per frame of the video (``X_left`` / ``X_right`` count the
  frames of ``X``; an ``X.txt`` beside them is refused: the challenge has no ``X``), with
  values in range: VA two numbers in [-1, 1]; EXPR one class index 0..7; AU twelve 0/1
  values. With ``--expect`` (a list of ids, or the annotation folder),
  every expected video must have its file: a video ``predict`` left out fails the check.
- Hume-Reaction (``eri``): one CSV ``File_ID,Adoration,…,Surprise``, one row per video,
  intensities in [0, 1]; with the partition, exactly one row per test id.

Each problem names the file and line (and column where there is one).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from extract.media.clock import base_video
from extract.registry import Registry
from fuse.errors import ConfigError
from fuse.labels.affwild2 import AU_NAMES, EXPR_CLASSES, VA_TARGETS
from fuse.labels.hume import EMOTIONS

MAX_PER_FILE = 3  # value problems reported per file before "… and N more"


@dataclass
class SubmissionReport:
    """What :func:`check_submission` found."""

    task: str
    files: int = 0  # prediction files read
    rows: int = 0  # prediction lines / rows checked
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.files > 0


@dataclass(frozen=True)
class FrameFormat:
    """One Aff-Wild2 per-frame submission format."""

    header: list[str]
    check: Callable[[list[str]], str | None]  # a line's values → what is wrong, or None


def _numbers(cells: list[str], n: int, lo: float, hi: float) -> str | None:
    if len(cells) != n:
        return f"{len(cells)} values, expected {n}"
    for col, cell in enumerate(cells, start=1):
        try:
            v = float(cell)
        except ValueError:
            return f"column {col}: {cell!r} is not a number"
        if not math.isfinite(v) or not lo <= v <= hi:
            return f"column {col}: {cell} is outside [{lo:g}, {hi:g}]"
    return None


def _integers(cells: list[str], n: int, allowed: range) -> str | None:
    if len(cells) != n:
        return f"{len(cells)} values, expected {n}"
    for col, cell in enumerate(cells, start=1):
        try:
            v = int(cell.strip())
        except ValueError:
            return f"column {col}: {cell!r} is not an integer"
        if v not in allowed:
            return f"column {col}: {v} is not one of {allowed.start}..{allowed.stop - 1}"
    return None


FRAME_FORMATS: dict[str, FrameFormat] = {
    "va": FrameFormat(VA_TARGETS, lambda c: _numbers(c, 2, -1.0, 1.0)),
    "expr": FrameFormat(EXPR_CLASSES, lambda c: _integers(c, 1, range(len(EXPR_CLASSES)))),
    "au": FrameFormat(AU_NAMES, lambda c: _integers(c, len(AU_NAMES), range(2))),
}

Checker = Callable[..., SubmissionReport]
CHECKERS: Registry[Checker] = Registry("submission format")


def check_submission(path: str | Path, task: str, *, videos: str | Path | None = None,
                     partition: str | Path | None = None,
                     expect: str | Path | None = None) -> SubmissionReport:
    """Check the submission at ``path`` for ``task`` (see the module docstring).

    ``videos``: the raw videos (frame counts); ``expect``: the ids that must have a
    prediction: a file (one per line, or a CSV with a video / File_ID column) or a folder of
    annotation files (``<video>.txt``, e.g. Aff-Wild2's ``Validation_Set``: every labelled
    video, ``X_left`` / ``X_right`` included); ``partition`` (eri): the split CSV whose test
    ids must each have one row.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    return CHECKERS.get(task)(path, task, videos=videos, partition=partition, expect=expect)


def _expected_ids(expect: str | Path | None) -> list[str] | None:
    from fuse.labels.partition import ID_COLUMNS, clean_id

    if not expect:
        return None
    path = Path(expect)
    if path.is_dir():  # an annotation folder (Aff-Wild2: <split>/<video>.txt): its video ids
        ids = sorted({f.stem for f in path.rglob("*.txt")})
        if not ids:
            raise ConfigError(f"--expect {path}: no <video>.txt annotation files in the folder")
        return ids
    if not path.is_file():
        raise ConfigError(f"--expect {path} is neither a file nor a folder")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if lines and "," in lines[0]:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            col = next((c for c in ID_COLUMNS if c in (reader.fieldnames or [])), None)
            if col is None:
                raise ConfigError(f"--expect {path} line 1: needs one of the columns "
                                  f"{ID_COLUMNS}")
            return [clean_id(row[col]) for row in reader]
    if lines and lines[0].lower() in ID_COLUMNS:
        lines = lines[1:]
    return [clean_id(ln) for ln in lines]


def _frame_count(videos: str | Path, name: str, cache: dict[Path, int]) -> int:
    from extract.media.clock import find_video
    from extract.media.video import frame_times

    video = find_video(videos, name)
    if video not in cache:
        cache[video] = len(frame_times(video))
    return cache[video]


@CHECKERS.register("va")
@CHECKERS.register("expr")
@CHECKERS.register("au")
def check_frames(path: Path, task: str, *, videos=None, partition=None,
                 expect=None) -> SubmissionReport:
    """An Aff-Wild2 folder of per-video files."""
    from extract.errors import MediaError

    fmt = FRAME_FORMATS[task]
    report = SubmissionReport(task)
    if not path.is_dir():
        raise ConfigError(f"{path}: an Aff-Wild2 submission is a folder of <video>.txt files")
    files = sorted(path.glob("*.txt"))
    report.files = len(files)
    if not files:
        report.problems.append(f"{path}: no <video>.txt files")
    counts: dict[Path, int] = {}
    for f in files:
        lines = f.read_text().splitlines()
        header = lines[0].strip() if lines else ""
        if header != ",".join(fmt.header):
            report.problems.append(f"{f} line 1: header {header!r}, expected "
                                   f"{','.join(fmt.header)!r}")
        body = lines[1:]
        report.rows += len(body)
        if videos is not None:
            try:
                n = _frame_count(videos, f.stem, counts)
            except MediaError as exc:
                report.problems.append(f"{f}: {exc}")
            else:
                if len(body) != n:
                    report.problems.append(f"{f}: {len(body)} prediction lines, but the video "
                                           f"has {n} frames")
        bad = []
        for i, line in enumerate(body, start=2):
            what = fmt.check(line.split(","))
            if what:
                bad.append(f"{f} line {i}, {what}")
        report.problems += bad[:MAX_PER_FILE]
        if len(bad) > MAX_PER_FILE:
            report.problems.append(f"{f}: … and {len(bad) - MAX_PER_FILE} more bad lines")
    have = {f.stem for f in files}
    split = {base_video(v) for v in have if base_video(v) != v}  # X of X_left / X_right
    report.problems += [f"{path / (base + '.txt')}: {base} is split into {base}_left / "
                        f"{base}_right (two persons), which have files here; the challenge has "
                        f"no {base}" for base in sorted(split & have)]
    expected = _expected_ids(expect)
    if expected is not None:
        report.problems += [f"{path}: no prediction file for {v} ({v}.txt)"
                            for v in expected if v not in have]
    return report


@CHECKERS.register("eri")
def check_eri(path: Path, task: str, *, videos=None, partition=None,
              expect=None) -> SubmissionReport:
    """A Hume-Reaction ERI CSV (or a folder holding ``predictions.csv``)."""
    from fuse.labels.partition import clean_id, read_partition

    report = SubmissionReport(task)
    if path.is_dir():
        path = path / "predictions.csv"
        if not path.is_file():
            raise ConfigError(f"{path} does not exist")
    report.files = 1
    header = ["File_ID", *EMOTIONS]
    seen: dict[str, int] = {}
    bad = []
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0]] != header:
        report.problems.append(f"{path} line 1: header {','.join(rows[0]) if rows else ''!r}, "
                               f"expected {','.join(header)!r}")
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        report.rows += 1
        vid = clean_id(row[0])
        if vid in seen:
            bad.append(f"{path} line {line}: File_ID {row[0]!r} also on line {seen[vid]}")
        seen[vid] = line
        what = _numbers(row[1:], len(EMOTIONS), 0.0, 1.0)
        if what:
            bad.append(f"{path} line {line} ({row[0]}), {what}")
    report.problems += bad[:MAX_PER_FILE * 3]
    if len(bad) > MAX_PER_FILE * 3:
        report.problems.append(f"{path}: … and {len(bad) - MAX_PER_FILE * 3} more bad rows")
    wanted = _expected_ids(expect) or []
    if partition:
        wanted += [v for v, s in read_partition(partition).items() if s == "test"]
        tests = set(wanted)
        extra = sorted(v for v in seen if v not in tests)
        if extra:
            report.problems.append(f"{path}: {len(extra)} rows are not test ids of {partition}: "
                                   f"{', '.join(extra[:10])}" + (" …" if len(extra) > 10 else ""))
    missing = [v for v in dict.fromkeys(wanted) if v not in seen]
    if missing:
        report.problems.append(f"{path}: no row for {len(missing)} expected ids: "
                               f"{', '.join(missing[:10])}" + (" …" if len(missing) > 10 else ""))
    return report
