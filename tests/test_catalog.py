"""features.yaml validation: every problem named, wrong types refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from extract.catalog import FeatureSpec, load_catalog
from extract.errors import ConfigError
from extract.extractors.base import availability


def _write(tmp_path: Path, features) -> Path:
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump({"features": features}))
    return path


def test_the_shipped_catalog_names_every_feature_the_papers_use():
    specs = load_catalog(Path(__file__).resolve().parents[1] / "features.yaml")
    assert {"densenet", "ires100", "mae", "vitface", "fau", "wav2vec2", "hubert", "ecapa",
            "deepspectrum", "egemaps", "compare", "fbank"} <= set(specs)
    assert all(availability(s).available for s in specs.values())  # implemented, packages here


@pytest.mark.parametrize("entry, message", [
    ({"modality": "audio", "extractor": "fbank", "dim": True}, "dim must be a positive integer"),
    ({"modality": "visual", "extractor": "densenet", "dim": 8, "input": [112]},
     "input must be a mapping"),
    ({"modality": "visual", "extractor": "densenet", "dim": 8, "input": {"face_size": "big"}},
     "face_size must be a positive integer"),
    ({"modality": "audio", "extractor": "fbank", "dim": 8, "extras": {"x": "a"}},
     "extras dims must be positive integers"),
    ({"modality": "speech", "extractor": "fbank", "dim": 8}, "modality 'speech'"),
])
def test_bad_entries_are_refused_with_the_reason(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message):
        load_catalog(_write(tmp_path, {"bad": entry, "also_bad": {"dim": 3}}))
    with pytest.raises(ConfigError, match="2 problem"):  # every problem, at once
        load_catalog(_write(tmp_path, {"bad": entry, "also_bad": {"dim": 3}}))


def test_a_list_at_the_top_is_a_clear_error(tmp_path):
    path = tmp_path / "features.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top-level 'features:' mapping"):
        load_catalog(path)


@pytest.mark.parametrize("extractor", ["fbank", "opensmile"])
def test_frame_based_audio_features_refuse_other_rates_up_front(extractor):
    from extract.extractors.base import create

    opts = {"feature_set": "eGeMAPSv02", "level": "lld"} if extractor == "opensmile" else {}
    dim = 25 if extractor == "opensmile" else 80
    for change, message in (({"input": {"sample_rate": 8000}}, "decoded at 16000"),
                            ({"rate": "frames"}, "native rate")):
        spec = FeatureSpec("x", "audio", extractor, dim, None, options=opts,
                           **{"input": {"sample_rate": 16000}, **change})
        with pytest.raises(ConfigError, match=message):
            create(spec)
