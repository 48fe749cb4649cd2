"""Import (MuSe CSV, ABAW HDF5, npy), export round trips, and the xarray / pandas views."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from extract.errors import ConfigMismatchError, ImportFormatError
from extract.io import READERS, WRITERS, export_feature, import_features
from extract.io import importer as importer_module
from extract.io.cli_commands import export_cmd, import_cmd, read_fps_table
from extract.store import FeatureStore
from extract.views import contents, open_dataset, video_frame

RNG = np.random.default_rng(7)


def muse_csv(path: Path, rows: int, dim: int, step_ms: int = 250, nan_row: int | None = None,
             meta: tuple[str, str] = ("timestamp", "segment_id")) -> np.ndarray:
    """A MuSe-baseline CSV: timestamp (ms), segment_id, then ``dim`` feature columns."""
    x = RNG.normal(size=(rows, dim))
    if nan_row is not None:
        x[nan_row] = np.nan
    df = pd.DataFrame(x, columns=[f"egemaps_{i}" for i in range(dim)])
    df.insert(0, meta[1], 1 + np.arange(rows) // 4)
    df.insert(0, meta[0], np.arange(rows) * step_ms)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return x


def assert_complete_only(store_path: Path, feature: str, videos: list[str]) -> None:
    if not (store_path / "zarr.json").is_file():
        assert videos == []
        return
    fs = FeatureStore(store_path)
    assert fs.complete_set(feature) == set(videos)


# ------------------------------------------------------------------------------ import
def test_registries_list_the_formats():
    assert READERS.names() == ["csv", "h5", "npy"]
    assert WRITERS.names() == ["csv", "h5"]


def test_import_muse_csv_folder(tmp_path):
    src = tmp_path / "egemaps"
    a = muse_csv(src / "devel" / "10.csv", 9, 5, nan_row=3)
    b = muse_csv(src / "train" / "7.csv", 6, 5)
    report = import_features("csv", "egemaps", "audio", src, tmp_path / "s.zarr",
                             dtype="float32", extractor="opensmile", config={"set": "eGeMAPS"})
    assert report.imported == ["devel/10", "train/7"] and report.ok
    fs = FeatureStore(tmp_path / "s.zarr")
    fa = fs.read_video("egemaps", "devel/10")
    assert fa.data.dtype == np.float32
    valid = np.ones(9, bool)
    valid[3] = False
    np.testing.assert_array_equal(fa.mask, valid)
    np.testing.assert_array_equal(fa.data[valid], a[valid].astype(np.float32))
    assert not fa.data[3].any()  # a NaN row is stored as zeros with mask False
    np.testing.assert_array_equal(fa.timestamps, np.arange(9) * 250 / 1000.0)
    src_attrs = fa.attrs["source"]
    assert src_attrs["sha256"] == hashlib.sha256((src / "devel/10.csv").read_bytes()).hexdigest()
    assert src_attrs["time_column"] == "timestamp" and src_attrs["time_unit"] == "ms"
    np.testing.assert_array_equal(fs.read_video("egemaps", "train/7").data,
                                  b.astype(np.float32))
    info = fs.feature_info("egemaps")
    assert (info.modality, info.dim, info.extractor) == ("audio", 5, "opensmile")
    record = info.provenance["imports"][0]
    assert record["format"] == "csv" and record["source"] == str(src.resolve())
    assert record["options"]["time_unit"] == "auto" and "imported" in record
    assert info.provenance["dim_names"] == [f"egemaps_{i}" for i in range(5)]
    # a second import skips what is complete
    again = import_features("csv", "egemaps", "audio", src, tmp_path / "s.zarr",
                            dtype="float32", extractor="opensmile", config={"set": "eGeMAPS"})
    assert again.imported == [] and again.skipped == ["devel/10", "train/7"]


def test_import_csv_times_from_fps_and_meta_columns(tmp_path):
    x = muse_csv(tmp_path / "v.csv", 5, 3, meta=("ts", "speaker"))
    store = tmp_path / "s.zarr"
    import_features("csv", "f", "audio", tmp_path / "v.csv", store, fps=4, meta_columns=2,
                    dtype="float32")
    fa = FeatureStore(store).read_video("f", "v")
    np.testing.assert_array_equal(fa.timestamps, np.arange(5) / 4)
    np.testing.assert_array_equal(fa.data, x.astype(np.float32))
    # the time column given by name, in seconds
    import_features("csv", "g", "audio", tmp_path / "v.csv", store, time_column="ts",
                    time_unit="s", meta_columns=2, dtype="float32")
    np.testing.assert_array_equal(FeatureStore(store).read_video("g", "v").timestamps,
                                  np.arange(5) * 250.0)


def abaw_h5(path: Path) -> dict[str, dict[int, np.ndarray]]:
    """ABAW layout: ``video/frame`` (D,) datasets, frames from 1, some missing, one NaN."""
    frames = {"video_1": {i: RNG.normal(size=8) for i in (1, 2, 4, 5, 6)},
              "12-24-1920x1080": {i: RNG.normal(size=8) for i in range(3, 10)}}
    frames["video_1"][5][:] = np.nan
    with h5py.File(path, "w") as f:
        for video, rows in frames.items():
            for i, vec in rows.items():
                f[f"{video}/{i:05d}"] = vec
    return frames


def test_import_abaw_h5(tmp_path):
    frames = abaw_h5(tmp_path / "ires100.h5")
    store = tmp_path / "s.zarr"
    report = import_features("h5", "ires100", "visual", tmp_path / "ires100.h5", store,
                             fps=30, frame_origin=1)
    assert report.imported == ["12-24-1920x1080", "video_1"]
    fs = FeatureStore(store)
    fa = fs.read_video("ires100", "video_1")
    assert fa.data.dtype == np.float16 and fa.data.shape == (6, 8)  # frames 1…6
    np.testing.assert_array_equal(fa.mask, [True, True, False, True, False, True])
    np.testing.assert_array_equal(fa.timestamps, np.arange(6) / 30)
    for i in (1, 2, 4, 6):
        np.testing.assert_array_equal(fa.data[i - 1], frames["video_1"][i].astype(np.float16))
    assert not fa.data[2].any() and not fa.data[4].any()
    assert fa.attrs["source"]["missing_frames"] == 1
    fb = fs.read_video("ires100", "12-24-1920x1080")
    np.testing.assert_array_equal(fb.timestamps, np.arange(2, 9) / 30)  # first frame is 3
    assert fb.mask.all()


def test_import_h5_with_fps_table(tmp_path):
    abaw_h5(tmp_path / "f.h5")
    table = tmp_path / "fps.csv"
    table.write_text("video,fps\nvideo_1,25\n12-24-1920x1080,30\n")
    code = import_cmd("h5", "f", str(tmp_path / "f.h5"), str(tmp_path / "s.zarr"),
                      modality="visual", fps_table=str(table), frame_origin=1)
    assert code == 0
    fa = FeatureStore(tmp_path / "s.zarr").read_video("f", "video_1")
    np.testing.assert_array_equal(fa.timestamps, np.arange(6) / 25)
    table.write_text("video,fps\nvideo_1,fast\n")
    with pytest.raises(ImportFormatError, match="fps.csv: line 2"):
        read_fps_table(table)


def test_import_npy_variants(tmp_path):
    src = tmp_path / "npy"
    src.mkdir()
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    t = np.array([0.0, 0.04, 0.08, 0.2, 0.24, 0.3])
    np.save(src / "dict.npy", {"feature": x, "timestamps": t}, allow_pickle=True)
    np.save(src / "frames.npy", {1: x[0], "00002": x[1], "00004.jpg": x[2]}, allow_pickle=True)
    np.save(src / "plain.npy", x)
    np.savez(src / "packed.npz", features=x, frames=np.array([10, 11, 12, 14, 15, 16]))
    report = import_features("npy", "emb", "visual", src, tmp_path / "s.zarr", fps=25,
                             frame_origin=1, allow_pickle=True, dtype="float32")
    assert report.imported == ["dict", "frames", "packed", "plain"]
    fs = FeatureStore(tmp_path / "s.zarr")
    d = fs.read_video("emb", "dict")
    np.testing.assert_array_equal(d.data, x)
    np.testing.assert_array_equal(d.timestamps, t)
    f = fs.read_video("emb", "frames")
    np.testing.assert_array_equal(f.mask, [True, True, False, True])
    np.testing.assert_array_equal(f.data[[0, 1, 3]], x[:3])
    np.testing.assert_array_equal(f.timestamps, np.arange(4) / 25)
    p = fs.read_video("emb", "plain")
    np.testing.assert_array_equal(p.timestamps, np.arange(6) / 25)
    k = fs.read_video("emb", "packed")
    assert k.data.shape == (7, 4) and not k.mask[3]  # frame 13 missing
    np.testing.assert_array_equal(k.timestamps, (np.arange(10, 17) - 1) / 25)


def test_pickled_npy_needs_allow_pickle(tmp_path):
    np.save(tmp_path / "v.npy", {"feature": np.zeros((2, 3))}, allow_pickle=True)
    with pytest.raises(ImportFormatError, match=r"v\.npy holds a pickled object.*allow_pickle"):
        import_features("npy", "f", "visual", tmp_path / "v.npy", tmp_path / "s.zarr", fps=25)
    assert_complete_only(tmp_path / "s.zarr", "f", [])


# ------------------------------------------------------------------------------ errors
def _bad_cases(tmp_path: Path):
    """(format, source, options, message pattern) of each error case."""
    cases = []
    d = tmp_path / "shape"
    d.mkdir()
    np.save(d / "v.npy", np.zeros((2, 3, 4)))
    cases.append(("npy", d, {"fps": 25}, r"v\.npy: array has shape \(2, 3, 4\), expected"))
    d = tmp_path / "dims"
    muse_csv(d / "a.csv", 4, 3)
    muse_csv(d / "b.csv", 4, 5)
    cases.append(("csv", d, {}, r"b\.csv: 5 values per row, but .*a\.csv has 3"))
    d = tmp_path / "text"
    muse_csv(d / "a.csv", 4, 3)
    df = pd.read_csv(d / "a.csv")
    df["egemaps_1"] = df["egemaps_1"].astype(object)
    df.loc[2, "egemaps_1"] = "n/a?"
    df.to_csv(d / "a.csv", index=False)
    cases.append(("csv", d, {}, r"a\.csv: line 4: column 'egemaps_1' holds 'n/a\?'"))
    d = tmp_path / "dup"
    muse_csv(d / "a.csv", 4, 3)
    df = pd.read_csv(d / "a.csv")
    df.loc[2, "timestamp"] = df.loc[1, "timestamp"]
    df.to_csv(d / "a.csv", index=False)
    cases.append(("csv", d, {}, r"a\.csv: line 4: duplicate time .* at line 3"))
    path = tmp_path / "rows.h5"
    with h5py.File(path, "w") as f:
        f["v/00001"] = np.zeros(4)
        f["v/00002"] = np.zeros(5)
    cases.append(("h5", path, {"fps": 30}, r"rows\.h5:v: frame 'v/00002' has 5 values"))
    path = tmp_path / "dupframe.h5"
    with h5py.File(path, "w") as f:
        f["v/00001"] = np.zeros(4)
        f["v/1"] = np.zeros(4)
    cases.append(("h5", path, {"fps": 30}, r"dupframe\.h5:v: duplicate frame 1"))
    d = tmp_path / "notime"
    muse_csv(d / "a.csv", 4, 3, meta=("t", "seg"))
    cases.append(("csv", d, {"meta_columns": 2}, r"a\.csv: no time column"))
    return cases


def test_each_error_names_file_and_row_and_writes_nothing(tmp_path):
    for n, (fmt, source, options, pattern) in enumerate(_bad_cases(tmp_path)):
        store = tmp_path / f"s{n}.zarr"
        with pytest.raises(ImportFormatError, match=pattern):
            import_features(fmt, "feat", "audio", source, store, **options)
        assert_complete_only(store, "feat", [])
        if (store / "zarr.json").is_file():
            assert not FeatureStore(store).has_feature("feat")  # validated before any write


def test_all_bad_files_reported_at_once_and_skip_bad(tmp_path):
    src = tmp_path / "csv"
    muse_csv(src / "good.csv", 4, 3)
    muse_csv(src / "wide.csv", 4, 6)
    (src / "broken.csv").write_text("timestamp,segment_id,a\n0,1,x\n")
    store = tmp_path / "s.zarr"
    with pytest.raises(ImportFormatError) as err:
        import_features("csv", "f", "audio", src, store)
    text = str(err.value)
    assert "2 of 3 inputs" in text and "broken.csv" in text and "wide.csv" in text
    assert "nothing was imported" in text
    assert_complete_only(store, "f", [])
    report = import_features("csv", "f", "audio", src, store, skip_bad=True)
    assert report.imported == ["good"] and sorted(v for v, _ in report.bad) == ["broken", "wide"]
    assert_complete_only(store, "f", ["good"])


def test_interrupted_import_leaves_nothing_complete(tmp_path, monkeypatch):
    src = tmp_path / "csv"
    for v in "abc":
        muse_csv(src / f"{v}.csv", 4, 3)
    calls = {"n": 0}
    real = importer_module.check_rows

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # pass 2 (no cache): the second video's reread fails
            raise ImportFormatError("disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(importer_module, "check_rows", failing)
    with pytest.raises(ImportFormatError, match="disk went away"):
        import_features("csv", "f", "audio", src, tmp_path / "s.zarr", cache_bytes=0)
    assert_complete_only(tmp_path / "s.zarr", "f", ["a"])


def test_import_refuses_another_config_before_reading(tmp_path):
    muse_csv(tmp_path / "v.csv", 4, 3)
    store = tmp_path / "s.zarr"
    import_features("csv", "f", "audio", tmp_path / "v.csv", store, extractor="x")
    muse_csv(tmp_path / "w.csv", 4, 3)
    with pytest.raises(ConfigMismatchError, match="'f'"):
        import_features("csv", "f", "audio", tmp_path / "w.csv", store, extractor="y")


# ------------------------------------------------------------------------ round trips
def small_store(path: Path) -> FeatureStore:
    """float16 visual feature with masked rows and irregular times; a regular audio one."""
    fs = FeatureStore(path, "a")
    fs.ensure_feature("face", modality="visual", dim=6, extractor="iresnet",
                      config={"weights": "ires100.pth", "layer": "fc"})
    for video, n in (("sess 1/clip:2", 7), ("b", 4), ("_c", 1)):
        x = RNG.normal(size=(n, 6)) * 3
        mask = RNG.random(n) > 0.3
        x[~mask] = 0
        t = np.cumsum(RNG.uniform(0.02, 0.05, n))
        fs.write_video("face", video, x, t, mask)
    fs.ensure_feature("voice", modality="audio", dim=3, extractor="egemaps", config={},
                      dtype="float32")
    fs.write_video("voice", "b", RNG.normal(size=(5, 3)), np.arange(5) * 0.1)
    return fs


@pytest.mark.parametrize("fmt", ["h5", "csv"])
def test_export_import_round_trip_is_exact(tmp_path, fmt):
    fs = small_store(tmp_path / "a.zarr")
    out = tmp_path / ("face.h5" if fmt == "h5" else "face_csv")
    export_feature(fs, "face", fmt, out, frame_origin=1)
    report = import_features(fmt, "face", None, out, tmp_path / "b.zarr")
    assert sorted(report.imported) == sorted(fs.videos("face"))
    fb = FeatureStore(tmp_path / "b.zarr")
    assert fb.feature_info("face").fingerprint == fs.feature_info("face").fingerprint
    assert fb.feature_info("face").modality == "visual"
    for video in fs.videos("face"):
        a, b = fs.read_video("face", video), fb.read_video("face", video)
        assert b.data.dtype == np.float16
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.mask, b.mask)
    assert fb.verify().ok


def test_export_h5_layout_and_subset(tmp_path):
    fs = small_store(tmp_path / "a.zarr")
    assert export_cmd(str(tmp_path / "a.zarr"), "face", str(tmp_path / "f.h5"), videos=["b"],
                      frame_origin=1) == 0
    with h5py.File(tmp_path / "f.h5") as f:
        assert sorted(f["b"]) == ["00001", "00002", "00003", "00004", "_mask", "_time"]
        assert f["b/00001"].shape == (6,) and f["b/00001"].dtype == np.float16
    with pytest.raises(Exception, match="no complete video 'zz'"):
        export_feature(fs, "face", "h5", tmp_path / "g.h5", videos=["zz"])


# ------------------------------------------------------------------------------ views
def test_open_dataset_and_contents(tmp_path):
    fs = small_store(tmp_path / "a.zarr")
    ds = open_dataset(tmp_path / "a.zarr", "face")
    assert dict(ds.sizes) == {"video": 3, "frame": 7, "dim": 6}
    assert list(ds["video"].values) == ["_c", "b", "sess 1/clip:2"]
    np.testing.assert_array_equal(ds["length"].values, [1, 4, 7])
    b = fs.read_video("face", "b")
    np.testing.assert_array_equal(ds["face"].sel(video="b").values[:4], b.data)
    assert np.isnan(ds["face"].sel(video="b").values[4:]).all()
    np.testing.assert_array_equal(ds["time"].sel(video="b").values[:4], b.timestamps)
    assert np.isnan(ds["time"].sel(video="b").values[4:]).all()
    np.testing.assert_array_equal(ds["mask"].sel(video="b").values, [*b.mask, False, False, False])
    assert ds.attrs["extractor"] == "iresnet" and '"layer": "fc"' in ds.attrs["config"]
    sub = open_dataset(fs, "face", videos=["b"])
    assert dict(sub.sizes) == {"video": 1, "frame": 4, "dim": 6}

    table = contents(tmp_path / "a.zarr")
    assert list(table.columns) == ["feature", "video", "modality", "frames", "valid", "dim",
                                   "rate", "extractor", "weights", "complete"]
    assert len(table) == 4 and table["complete"].all()
    voice = table[table.feature == "voice"].iloc[0]
    assert (voice.video, voice.frames, voice.dim, voice.rate) == ("b", 5, 3, 10.0)
    assert table[table.feature == "face"]["weights"].eq("ires100.pth").all()

    frame = video_frame(fs, "voice", "b")
    assert frame.index.name == "time" and list(frame.columns) == ["mask", 0, 1, 2]
