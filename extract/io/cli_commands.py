"""Command bodies for ``extract import``, ``extract export`` and ``extract claims``.

Plain arguments, one library call each; ``extract/cli.py`` wraps them in Typer commands
(options as named below: ``--fps``, ``--fps-table``, ``--skip-bad`` …). Each returns the
exit code; :class:`~extract.errors.ExtractError` s propagate to the CLI's error handler.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import typer

from extract.errors import ImportFormatError

log = logging.getLogger(__name__)


def read_fps_table(path: str | Path) -> dict[str, float]:
    """A CSV with columns ``video,fps`` (a header line) → {video id: fps}."""
    path = Path(path)
    out: dict[str, float] = {}
    with path.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            try:
                out[row["video"]] = float(row["fps"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ImportFormatError(f"{path}: line {n}: expected columns video,fps with a "
                                        f"number, got {row}") from exc
    return out


def parse_config(pairs: Sequence[str] | None) -> dict[str, str] | None:
    """``["origin=MuSe 2021", "layer=6"]`` → a config dict (None when empty)."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ImportFormatError(f"--config expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def import_cmd(format: str, name: str, source: str, store: str, *, modality: str | None = None,
               fps: float | None = None, fps_table: str | None = None,
               frame_shift: float | None = None, time_column: str | None = None,
               time_unit: str = "auto", frame_origin: int = 0, meta_columns: int | None = None,
               dtype: str | None = None, extractor: str | None = None,
               config: Sequence[str] | None = None, allow_pickle: bool = False,
               skip_bad: bool = False, overwrite: bool = False) -> int:
    """``extract import FORMAT NAME SOURCE --store S [...]``: 0 when every input was imported."""
    from extract.io import import_features

    if fps is not None and fps_table is not None:
        raise ImportFormatError("give --fps or --fps-table, not both")
    rate = read_fps_table(fps_table) if fps_table else fps
    report = import_features(format, name, modality, source, store, fps=rate,
                             frame_shift=frame_shift, time_column=time_column,
                             time_unit=time_unit, frame_origin=frame_origin,
                             meta_columns=meta_columns, allow_pickle=allow_pickle, dtype=dtype,
                             extractor=extractor, config=parse_config(config),
                             skip_bad=skip_bad, overwrite=overwrite)
    typer.echo(f"{name}: imported {len(report.imported)}, already complete "
               f"{len(report.skipped)}, bad {len(report.bad)}")
    for _, msg in report.bad:
        typer.echo(f"  not imported: {msg}", err=True)
    return 0 if report.ok else 1


def export_cmd(store: str, feature: str, out: str, *, format: str = "h5",
               videos: Sequence[str] | None = None, frame_origin: int = 0) -> int:
    """``extract export --store STORE FEATURE OUT [--format h5|csv] [--video ID ...]``."""
    from extract.io import export_feature

    files = export_feature(store, feature, format, out, videos=videos or None,
                           frame_origin=frame_origin)
    typer.echo(f"{feature}: wrote {len(files)} file(s) to {out}")
    return 0


def claims_cmd(store: str, *, clear_stale: bool = False) -> int:
    """``extract claims --store STORE [--clear-stale]``: list claims (live and stale)."""
    import time

    from extract.claims import ClaimBook
    from extract.errors import ClaimError
    from extract.locations import is_url
    from extract.store import FeatureStore

    FeatureStore(store, "r")  # raises when there is no store
    if is_url(store):
        raise ClaimError(f"{store} is not a local folder, and claims live only in local "
                         "stores: runs on it take none (run one `extract run` at a time on it)")
    book = ClaimBook(store, run_id="claims-cli", heartbeat=False)
    if clear_stale:
        typer.echo(f"removed {book.clear_stale()} stale claim(s)")
    now = time.time()
    rows = book.records()
    for rec, stale in rows:
        state = "stale" if stale else f"expires in {rec.expires - now:.0f}s"
        typer.echo(f"{rec.key}\t{rec.owner}\t{state}")
    if not rows:
        typer.echo("no claims")
    return 0
