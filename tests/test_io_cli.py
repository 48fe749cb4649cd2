"""`extract export` then `extract import` through the command line gives the arrays back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from extract.cli import app
from extract.store import FeatureStore, open_store


def test_cli_export_import_round_trip(tmp_path: Path) -> None:
    src = open_store(tmp_path / "a.zarr", "a")
    src.ensure_feature("ires100", modality="visual", dim=4, extractor="x", config={"k": 1})
    rng = np.random.default_rng(0)
    mask = np.array([True, True, False, True, True])
    src.write_video("ires100", "video_1", rng.standard_normal((5, 4)) * mask[:, None],
                    np.arange(5) / 30.0, mask)
    runner = CliRunner()
    out = runner.invoke(app, ["export", "--store", str(tmp_path / "a.zarr"), "ires100",
                              str(tmp_path / "ires100.h5")])
    assert out.exit_code == 0, out.output
    back = runner.invoke(app, ["import", "--format", "h5", "--name", "ires100",
                               "--source", str(tmp_path / "ires100.h5"),
                               "--store", str(tmp_path / "b.zarr")])
    assert back.exit_code == 0, back.output
    a = FeatureStore(tmp_path / "a.zarr").read_video("ires100", "video_1")
    b = FeatureStore(tmp_path / "b.zarr").read_video("ires100", "video_1")
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.mask, b.mask)
