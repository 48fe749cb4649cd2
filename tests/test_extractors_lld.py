"""The weight-free audio extractors: openSMILE LLDs (eGeMAPS, ComParE) and the log-mel fbank."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from media_utils import tone

from extract.catalog import load_catalog
from extract.errors import ConfigError
from extract.extractors.base import availability, create

pytest.importorskip("opensmile")


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def wav() -> np.ndarray:
    return tone(1.5, 16000, seed=3)[0]


def test_egemaps_rows_at_10ms(catalog, wav) -> None:
    ext = create(catalog["egemaps"])
    assert availability(catalog["egemaps"]).available and not ext.needs_weights
    ext.load()
    out = ext.extract(wav)
    values = out.values[""]
    assert values.shape == (len(out.times), 25) and values.dtype == np.float32
    assert abs(len(out.times) - 150) <= 5
    # Window centres: 20 ms windows every 10 ms from 0 → 0.01, 0.02, …
    np.testing.assert_allclose(out.times[:5], [0.01, 0.02, 0.03, 0.04, 0.05], atol=1e-9)
    assert np.all(np.diff(out.times) >= 0) and out.mask.all() and np.isfinite(values).all()
    assert len(ext.column_names()) == 25


def test_compare_is_lld_then_deltas(catalog, wav) -> None:
    both = create(catalog["compare"])
    both.load()
    out = both.extract(wav)
    assert out.values[""].shape[1] == 130
    names = both.column_names()
    assert names[65:] == [n.replace("_sma", "_sma_de", 1) for n in names[:65]]
    lld_spec = dataclasses.replace(catalog["compare"], dim=65,
                                   options={"feature_set": "ComParE_2016", "level": "lld"})
    lld = create(lld_spec)
    lld.load()
    alone = lld.extract(wav)
    rows = len(out.times)
    np.testing.assert_allclose(out.values[""][:, :65], alone.values[""][:rows], rtol=1e-6)
    np.testing.assert_allclose(out.times, alone.times[:rows])


def test_opensmile_config_errors(catalog, wav) -> None:
    spec = catalog["egemaps"]
    with pytest.raises(ConfigError, match="'xx'"):
        create(dataclasses.replace(spec, options={"feature_set": "eGeMAPSv02", "level": "xx"}))
    with pytest.raises(ConfigError, match="dim 24"):
        create(dataclasses.replace(spec, dim=24))
    bad_set = create(dataclasses.replace(spec, options={"feature_set": "NoSuchSet"}))
    with pytest.raises(ConfigError, match="NoSuchSet"):
        bad_set.load()
    ext = create(spec)
    with pytest.raises(ConfigError, match="native rate"):
        ext.extract(wav, centers=np.array([0.5]))


def test_opensmile_too_short_gives_masked_row(catalog) -> None:
    ext = create(catalog["egemaps"])
    out = ext.extract(np.zeros(200, np.float32))
    assert len(out.times) <= 1
    assert not out.mask.any() and np.all(out.values[""] == 0)


def test_fbank_matches_reference_recipe(catalog, wav) -> None:
    from extract.models.fbank import frame_times, log_mel_fbank

    ext = create(catalog["fbank"])
    assert not ext.needs_weights
    out = ext.extract(wav)
    values = out.values[""]
    assert values.shape == (1 + (len(wav) - 400) // 160, 80)
    np.testing.assert_allclose(values, log_mel_fbank(wav), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.times, frame_times(len(values), 0.01, 0.025))
    assert out.times[0] == pytest.approx(0.0125)
    assert ext.extract(np.zeros(100, np.float32)).values[""].shape == (0, 80)


def test_fbank_options(catalog, wav) -> None:
    spec = dataclasses.replace(catalog["fbank"], dim=40, options={"f_max": 4000.0},
                               input={"sample_rate": 16000, "window": 0.05, "hop": 0.02})
    out = create(spec).extract(wav)
    assert out.values[""].shape[1] == 40
    np.testing.assert_allclose(np.diff(out.times), 0.02)
    with pytest.raises(ConfigError, match="n_mel"):
        create(dataclasses.replace(spec, options={"n_mel": 3}))
