"""openSMILE functionals: egemaps_func (88) and compare_func (6373) per clip or per window,
listed as available, one row per clip on the shared CREMA-D clips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from extract.catalog import apply_overrides, load_catalog
from extract.errors import ConfigError
from extract.extractors.base import availability, create

pytest.importorskip("opensmile")


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(Path(__file__).resolve().parents[1] / "features.yaml")


def tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_functionals_are_listed_and_available(catalog):
    for name, dim in (("egemaps_func", 88), ("compare_func", 6373)):
        spec = catalog[name]
        assert spec.dim == dim and spec.rate == "clip" and spec.modality == "audio"
        assert availability(spec).ready, availability(spec)


def test_one_row_per_clip_at_its_centre(catalog):
    import opensmile

    wav = tone(2.5)
    ex = create(catalog["egemaps_func"])
    rows = ex.extract(wav)
    values = rows.values[""]
    assert values.shape == (1, 88) and rows.mask.all()
    np.testing.assert_allclose(rows.times, [1.25])
    ref = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                          feature_level=opensmile.FeatureLevel.Functionals)
    np.testing.assert_allclose(values[0], ref.process_signal(wav, 16000).to_numpy()[0],
                               rtol=1e-6)
    assert ex.column_names()[0] == "F0semitoneFrom27.5Hz_sma3nz_amean"
    big = create(catalog["compare_func"]).extract(wav).values[""]
    assert big.shape == (1, 6373) and np.abs(big).max() > 65504  # why it is stored float32


def test_sliding_windows_cover_the_clip(catalog):
    spec = apply_overrides(catalog["egemaps_func"], sets={"options.window": "1.0",
                                                          "options.hop": "0.5", "rate": "2"})
    ex = create(spec)
    rows = ex.extract(tone(2.3))
    # windows [0,1] [0.5,1.5] [1,2] and one ending at the end [1.3,2.3]
    np.testing.assert_allclose(rows.times, [0.5, 1.0, 1.5, 1.8])
    assert rows.values[""].shape == (4, 88) and rows.mask.all()
    short = ex.extract(tone(0.7))  # shorter than one window: one row over the whole clip
    np.testing.assert_allclose(short.times, [0.35])
    tiny = create(catalog["egemaps_func"]).extract(tone(0.01))  # too short: masked, zeros
    assert not tiny.mask.any() and not tiny.values[""].any()


def test_functional_options_are_checked(catalog):
    def fails(**sets: str) -> str:
        with pytest.raises(ConfigError) as exc:
            create(apply_overrides(catalog["egemaps_func"], sets=sets))
        return str(exc.value)

    assert "give both (seconds > 0)" in fails(**{"options.window": "1.0"})
    assert "set rate to 2" in fails(**{"options.window": "1.0", "options.hop": "0.5"})
    assert "dim 80 does not match eGeMAPSv02 functionals (88 columns)" in fails(dim="80")
    assert "unknown option 'level'" in fails(**{"options.level": "lld"})
    assert "rate: clip" in fails(rate="100")


def test_one_row_per_crema_d_clip(shared_media: Path, tmp_path: Path):
    from extract.runner import RunOptions, run
    from extract.store import FeatureStore

    inputs = tmp_path / "in"
    inputs.mkdir()
    clips = sorted((shared_media / "cremad").glob("*.flv")) + sorted(
        (shared_media / "cremad").glob("*.mp3"))
    for clip in clips:
        shutil.copy(clip, inputs / clip.name)
    summary = run(RunOptions(features=["egemaps_func", "compare_func"], input=inputs,
                             store=str(tmp_path / "s.zarr"), workers=1, progress=False))
    assert summary.exit_code == 0, [f.to_dict() for f in summary.failures]
    store = FeatureStore(tmp_path / "s.zarr")
    assert store.feature_info("compare_func").dtype == "float32"
    assert sorted(store.videos("egemaps_func")) == sorted(c.stem for c in clips)
    for video in store.videos("egemaps_func"):
        for name, dim in (("egemaps_func", 88), ("compare_func", 6373)):
            fa = store.read_video(name, video)
            assert fa.data.shape == (1, dim) and fa.mask.all(), (name, video)
            assert 0.4 < float(fa.timestamps[0]) < 2.0  # the centre of a 1-4 s clip
            assert np.isfinite(fa.data).all()
