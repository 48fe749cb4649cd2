"""Bring features computed elsewhere (MuSe CSVs, ABAW HDF5, npy dicts) into the store.

Two passes: every video is read and checked first and problems are reported all at once;
only then is anything written (``skip_bad=True`` imports the good videos and reports the
rest). Each video goes through :meth:`FeatureStore.write_video`, whose completion marker is
written last, so an interrupted import leaves nothing that looks complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extract.errors import ImportFormatError
from extract.io.formats import (
    READERS,
    CheckedRows,
    ImportOptions,
    SourceItem,
    check_rows,
    sha256_file,
)
from extract.store import FeatureStore, fingerprint, gc_paused

log = logging.getLogger(__name__)

DEFAULT_EXTRACTOR = "imported"


@dataclass
class ImportReport:
    """What an import did."""

    feature: str
    format: str
    source: str
    imported: list[str] = field(default_factory=list)  # video ids written
    skipped: list[str] = field(default_factory=list)  # already complete in the store
    bad: list[tuple[str, str]] = field(default_factory=list)  # (video id, problem) not imported

    @property
    def ok(self) -> bool:
        return not self.bad


#: Videos written between two commits of an import (each commit flushes the bytes and appends
#: their index entries; an interrupted import redoes at most this many).
COMMIT_EVERY = 256


def open_store(store: FeatureStore | str | Path, mode: str) -> FeatureStore:
    """``store`` itself when already open, else the store at that path."""
    return store if isinstance(store, FeatureStore) else FeatureStore(store, mode)


def import_features(format: str, name: str, modality: str | None, source: str | Path,
                    store: FeatureStore | str | Path, *,
                    fps: float | Mapping[str, float] | None = None,
                    frame_shift: float | None = None, time_column: str | None = None,
                    time_unit: str = "auto", frame_origin: int = 0,
                    meta_columns: int | None = None, allow_pickle: bool = False,
                    dtype: str | None = None, extractor: str | None = None,
                    config: Mapping[str, Any] | None = None, skip_bad: bool = False,
                    overwrite: bool = False, cache_bytes: int = 1 << 30) -> ImportReport:
    """Import the videos of ``source`` as feature ``name`` of ``store``.

    ``format``: a registered reader (``csv``, ``h5``, ``npy``). Times come from the files
    (a CSV time column, exported ``_time``, an npy ``timestamps`` key) or from the row /
    frame index with ``fps`` (one number, or a mapping video id → fps) or ``frame_shift``
    (seconds); ``frame_origin`` is the index of a video's first frame (Aff-Wild2: 1).
    ``modality``, ``extractor``, ``config`` and ``dtype`` default to the metadata of files
    written by :func:`extract.io.export_feature`, else ``"imported"``, ``{"format": …}`` and
    float16. Videos already complete are skipped unless ``overwrite``. Raises
    :class:`ImportFormatError` listing every bad input (and imports nothing) unless ``skip_bad``.
    """
    options = ImportOptions(fps=fps, frame_shift=frame_shift, time_column=time_column,
                            time_unit=time_unit, frame_origin=frame_origin,
                            meta_columns=meta_columns, allow_pickle=allow_pickle)
    options.check()
    source = Path(source).expanduser()
    reader = READERS.get(format)(options)
    with gc_paused():  # 200k small items: cycle collection would double the listing time
        items = reader.items(source)
    meta = reader.metadata(source)
    modality = modality or meta.get("modality")
    if not modality:
        raise ImportFormatError(f"give the modality of {name!r} (visual, audio, …): {source} "
                                "does not record one")
    extractor = extractor or meta.get("extractor") or DEFAULT_EXTRACTOR
    config = dict(config) if config is not None else meta.get("config") or {"format": format}
    dtype = dtype or meta.get("dtype") or "float16"
    fs = open_store(store, "a")
    report = ImportReport(name, format, str(source))

    good, cache, dim_names, dim = _check_all(items, fs, name, dtype, overwrite, cache_bytes,
                                             report, extractor, config)
    if report.bad and not skip_bad:
        lines = "\n  - ".join(f"{msg}" for _, msg in report.bad)
        raise ImportFormatError(f"{len(report.bad)} of {len(items)} inputs in {source} cannot be "
                                f"imported; nothing was imported (skip_bad imports the rest):"
                                f"\n  - {lines}")
    for video, msg in report.bad:
        log.warning("not imported: %s (%s)", video, msg)
    if not good:
        log.info("%s: nothing to import into %s (%d already complete)", source, name,
                 len(report.skipped))
        return report

    record = {"format": format, "source": str(source.resolve()), "options": options.to_dict(),
              "imported": _now(), "videos": len(good)}
    if fs.has_feature(name):
        fs.append_provenance(name, "imports", record)
    else:
        provenance: dict[str, Any] = {"imports": [record]}
        if dim_names:
            provenance["dim_names"] = dim_names
        if meta.get("provenance"):
            provenance["exported_from"] = {"store": meta.get("store"),
                                           "provenance": meta["provenance"]}
        fs.ensure_feature(name, modality=modality, dim=dim, extractor=extractor, config=config,
                          dtype=dtype, provenance=provenance)
    try:
        _write_all(fs, name, format, good, cache, dtype, report)
    finally:
        fs.close()  # commits the videos written so far, even when one write failed
    log.info("imported %d videos into %s/%s (%d skipped as complete, %d bad)",
             len(report.imported), fs.path, name, len(report.skipped), len(report.bad))
    return report


def _write_all(fs: FeatureStore, name: str, format: str, good: list[Any],
               cache: dict[str, Any], dtype: str, report: ImportReport) -> None:
    hashes: dict[Path, str] = {}
    for n, item in enumerate(good, 1):
        rows = cache.pop(item.video, None) or check_rows(item.load(), item.where, dtype)
        if item.path not in hashes:
            hashes[item.path] = sha256_file(item.path)
        src = {"path": str(item.path.resolve()), "key": item.key, "format": format,
               "sha256": hashes[item.path], "imported": _now(), **rows.details}
        fs.write_video(name, item.video, rows.data, rows.timestamps, rows.mask, source=src,
                       commit=False)
        report.imported.append(item.video)
        if n % COMMIT_EVERY == 0:  # a killed import keeps every video committed so far
            fs.commit()
            log.info("imported %d/%d videos into %s", n, len(good), name)


def _check_all(items: list[SourceItem], fs: FeatureStore, name: str, dtype: str,
               overwrite: bool, cache_bytes: int, report: ImportReport, extractor: str,
               config: Mapping[str, Any]
               ) -> tuple[list[SourceItem], dict[str, CheckedRows], list[str] | None, int | None]:
    """Pass 1: read and check every video; fill ``report.bad`` / ``report.skipped``."""
    ref_dim, ref_where = None, ""
    if fs.has_feature(name):
        info = fs.feature_info(name)
        ref_dim, ref_where = info.dim, f"feature {name!r} in {fs.path}"
        fp = fingerprint({"extractor": extractor, "config": dict(config), "dim": info.dim,
                          "dtype": dtype})
        if fp != info.fingerprint:  # let ensure_feature word the mismatch, before any reading
            fs.ensure_feature(name, modality=info.modality, dim=info.dim, extractor=extractor,
                              config=config, dtype=dtype)
    good: list[SourceItem] = []
    cache: dict[str, CheckedRows] = {}
    cached = 0
    seen: dict[str, SourceItem] = {}
    dim_names: list[str] | None = None
    complete = fs.complete_set(name)  # the index, read once
    for item in items:
        if item.video in seen:
            report.bad.append((item.video, f"{item.where}: video id {item.video!r} also comes "
                                           f"from {seen[item.video].where}"))
            continue
        seen[item.video] = item
        if not overwrite and item.video in complete:
            report.skipped.append(item.video)
            continue
        try:
            rows = check_rows(item.load(), item.where, dtype)
        except (OSError, ValueError) as exc:  # ImportFormatError is a ValueError
            msg = str(exc) if isinstance(exc, ImportFormatError) else f"{item.where}: {exc}"
            report.bad.append((item.video, msg))
            continue
        d = rows.data.shape[1]
        if ref_dim is None:
            ref_dim, ref_where = d, item.where
        elif d != ref_dim:
            report.bad.append((item.video, f"{item.where}: {d} values per row, but {ref_where} "
                                           f"has {ref_dim}"))
            continue
        names = rows.details.pop("dim_names", None)
        if names is not None and dim_names is None:
            dim_names = list(names)
        elif names is not None and list(names) != dim_names:
            log.warning("%s: column names differ from the first file's", item.where)
        good.append(item)
        if cached + rows.nbytes <= cache_bytes:
            cache[item.video] = rows
            cached += rows.nbytes
    return good, cache, dim_names, ref_dim


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
