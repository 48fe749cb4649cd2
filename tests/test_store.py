"""The feature store contract: round trips, config clashes, completion, verify, ids, discovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_utils import write_audio, write_image_folder, write_video

from extract.errors import ConfigError, ConfigMismatchError, StoreError
from extract.ids import discover, video_id_from_key, video_key
from extract.store import FeatureStore

CFG = {"weights": None, "layer": 3}


def make_store(tmp_path: Path, dim: int = 8, name: str = "feat") -> FeatureStore:
    store = FeatureStore(tmp_path / "s.zarr", "a")
    store.ensure_feature(name, modality="visual", dim=dim, extractor="test", config=CFG)
    return store


def test_round_trip_regular_times(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((50, 8)).astype(np.float32)
    t = np.arange(50) * 0.04 + 0.5
    mask = np.ones(50, bool)
    mask[[3, 4, 10]] = False
    data[~mask] = 0
    store.write_video("feat", "spk1/clip 01", data, t, mask, source={"path": "x.mp4"},
                      extra_attrs={"note": "hi"})
    fa = FeatureStore(tmp_path / "s.zarr").read_video("feat", "spk1/clip 01")
    np.testing.assert_array_equal(fa.data, data.astype(np.float16))
    np.testing.assert_array_equal(fa.timestamps, t)
    np.testing.assert_array_equal(fa.mask, mask)
    assert fa.attrs["time"] == pytest.approx({"start": 0.5, "frame_shift": 0.04})
    assert fa.attrs["valid_frames"] == 47 and fa.attrs["complete"] is True
    assert fa.attrs["source"] == {"path": "x.mp4"} and fa.attrs["note"] == "hi"
    assert store.videos("feat") == ["spk1/clip 01"]
    info = store.feature_info("feat")
    assert (info.modality, info.dim, info.extractor, info.config) == ("visual", 8, "test", CFG)


def test_round_trip_irregular_times_and_dtype(tmp_path: Path) -> None:
    store = make_store(tmp_path, dim=3)
    t = np.array([0.0, 0.04, 0.08, 0.2, 0.24, 0.5, 1.0])
    data = np.arange(21, dtype=np.float32).reshape(7, 3)
    store.write_video("feat", "v", data, t)
    fa = store.read_video("feat", "v", dtype=np.float32)
    assert fa.data.dtype == np.float32
    np.testing.assert_array_equal(fa.data, data)
    np.testing.assert_array_equal(fa.timestamps, t)
    assert fa.attrs["time"] is None and fa.mask.all()


def test_empty_video_round_trip(tmp_path: Path) -> None:
    store = make_store(tmp_path, dim=4)
    store.write_video("feat", "empty", np.zeros((0, 4)), np.zeros(0))
    fa = store.read_video("feat", "empty")
    assert fa.data.shape == (0, 4) and store.is_complete("feat", "empty")


def test_two_configs_under_one_name_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    same = store.ensure_feature("feat", modality="visual", dim=8, extractor="test", config=CFG)
    assert same.fingerprint == store.feature_info("feat").fingerprint
    with pytest.raises(ConfigMismatchError, match="feat"):
        store.ensure_feature("feat", modality="visual", dim=8, extractor="test",
                             config={**CFG, "layer": 4})
    with pytest.raises(ConfigMismatchError):
        store.ensure_feature("feat", modality="visual", dim=16, extractor="test", config=CFG)


def test_bad_rows_and_names_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path, dim=4)
    with pytest.raises(StoreError, match="expected"):
        store.write_video("feat", "v", np.zeros((5, 3)), np.arange(5.0))
    with pytest.raises(StoreError, match="timestamps"):
        store.write_video("feat", "v", np.zeros((5, 4)), np.arange(4.0))
    with pytest.raises(StoreError, match="non-decreasing"):
        store.write_video("feat", "v", np.zeros((3, 4)), np.array([0.0, 2.0, 1.0]))
    with pytest.raises(StoreError, match="invalid feature name"):
        store.ensure_feature("_x", modality="audio", dim=1, extractor="t", config={})
    with pytest.raises(StoreError, match="nope"):
        store.read_video("nope", "v")


@pytest.mark.parametrize("vid", ["a", "spk1/clip 01", "_hidden", ".dot", "ü/ß~x", "a.b-c_d",
                                 "~2F", "x/../y"])
def test_ids_keys_round_trip(vid: str) -> None:
    key = video_key(vid)
    assert video_id_from_key(key) == vid
    assert "/" not in key and not key.startswith(("_", "."))


def test_keys_unique() -> None:
    ids = ["a/b", "a~2Fb", "a_b", "a b", "a%2Fb", "A/b", "_a", "~5Fa"]
    assert len({video_key(i) for i in ids}) == len(ids)
    with pytest.raises(ConfigError):
        video_key("")


def test_discover_mixed_inputs(tmp_path: Path) -> None:
    root = tmp_path / "in"
    write_video(root / "s1" / "a.mp4", 5, audio=False)
    write_video(root / "b.mkv", 5, audio=False)
    write_audio(root / "b.wav", 0.5)  # same stem as b.mkv: ids keep the extension
    write_audio(root / "c.m4a", 0.5)
    write_image_folder(root / "frames" / "v1", 4)
    (root / "notes.txt").write_text("not media")
    items = discover(root)
    got = {it.video_id: it.kind for it in items}
    assert got == {"s1/a": "video", "b.mkv": "video", "b.wav": "audio", "c": "audio",
                   "frames/v1": "images"}
    assert [it.video_id for it in items] == sorted(got)
    assert next(it for it in items if it.kind == "images").size == 4
    assert {it.video_id for it in discover(root, kinds=("audio",))} == {"b.wav", "c"}
    single = discover(root / "c.m4a")
    assert [(it.video_id, it.kind) for it in single] == [("c", "audio")]
    with pytest.raises(ConfigError, match="does not exist"):
        discover(tmp_path / "missing")


