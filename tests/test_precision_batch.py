"""``--precision`` (recorded in the config and fingerprint; fp32 reproduces the CPU reference)
and ``--batch-size NAME=B`` (crops gathered across frame batches; never in the fingerprint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import runner_plugin  # noqa: F401  (registers the test detector and extractors here too)
import torch
import yaml
from media_utils import write_audio, write_video

from extract.catalog import FeatureSpec
from extract.errors import ConfigError, ConfigMismatchError
from extract.extractors.base import create, to_device
from extract.media.audio import read_audio
from extract.models.densenet import DenseNet
from extract.runner import RunOptions, parse_batch_sizes, run
from extract.store import open_store


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("precision")
    torch.manual_seed(0)
    model = DenseNet(growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16,
                     num_classes=3).eval()
    weights = root / "dn.pth"
    torch.save(model.state_dict(), weights)
    dim = model.embedding_dim
    catalog = root / "features.yaml"
    catalog.write_text(yaml.safe_dump({"features": {
        "dn": {"modality": "visual", "extractor": "densenet", "dim": dim,
               "weights": str(weights), "input": {"face_size": 32}},
        "ds": {"modality": "audio", "extractor": "deepspectrum", "dim": dim,
               "weights": str(weights),
               "input": {"sample_rate": 16000, "window": 0.5, "hop": 0.25}, "rate": 4},
        "fbank": {"modality": "audio", "extractor": "fbank", "dim": 80,
                  "input": {"sample_rate": 16000, "window": 0.025, "hop": 0.01}, "rate": 100},
    }}))
    videos = root / "videos"
    write_video(videos / "v.mp4", 12)
    audio = root / "audio"
    write_audio(audio / "a.wav", 1.2, rate=16000, channels=1)
    return {"catalog": catalog, "videos": videos, "audio": audio, "weights": weights,
            "dim": dim, "root": root}


def opts(setup: dict, store: Path, features: list[str], inputs: str = "videos",
         **kw) -> RunOptions:
    base = dict(features=features, input=setup[inputs], store=str(store), workers=0,
                catalog=setup["catalog"], detector="test_center", plugins=["runner_plugin"],
                progress=False, batch_size=2)
    return RunOptions(**{**base, **kw})


def test_precision_defaults_and_checks() -> None:
    kw = dict(features=["x"], input=Path("."), store="s.zarr")
    assert RunOptions(**kw).resolved_precision == "fp32"
    assert RunOptions(**kw, gpus=2).resolved_precision == "bf16"
    assert RunOptions(**kw, gpus=2, precision="fp32").resolved_precision == "fp32"
    assert any("--precision must be one of fp32 | bf16 | fp16" in p
               for p in RunOptions(**kw, precision="half").problems())
    spec = FeatureSpec("fb", "audio", "fbank", 80, None,
                       input={"sample_rate": 16000, "window": 0.025, "hop": 0.01}, rate=100)
    assert create(spec, precision="bf16").resolved_config()["precision"] == "fp32"  # not torch
    with pytest.raises(ConfigError, match="--precision"):
        create(spec, precision="int8")


def test_fp32_run_equals_cpu_reference_and_precision_changes_fingerprint(
        setup: dict, tmp_path: Path) -> None:
    # audio: the stored rows equal the extractor on the same decoded audio, in fp32
    fp32 = tmp_path / "fp32.zarr"
    assert run(opts(setup, fp32, ["ds"], "audio", precision="fp32")).exit_code == 0
    store = open_store(str(fp32))
    stored = store.read_video("ds", "a").data.astype(np.float32)
    spec = FeatureSpec("ds", "audio", "deepspectrum", setup["dim"], str(setup["weights"]),
                       input={"sample_rate": 16000, "window": 0.5, "hop": 0.25}, rate=4)
    ex = create(spec)
    ex.load()
    audio = read_audio(setup["audio"] / "a.wav")
    ref = ex.extract_at(audio.wav, audio.sample_rate).values[""]
    np.testing.assert_array_equal(stored, ref.astype(np.float16).astype(np.float32))
    info = store.feature_info("ds")
    assert info.config["precision"] == "fp32"

    # the default on the CPU is fp32: same fingerprint; bf16 is another config
    default = tmp_path / "default.zarr"
    assert run(opts(setup, default, ["ds"], "audio")).exit_code == 0
    assert open_store(str(default)).feature_info("ds").fingerprint == info.fingerprint
    bf16 = tmp_path / "bf16.zarr"
    assert run(opts(setup, bf16, ["ds"], "audio", precision="bf16")).exit_code == 0
    other = open_store(str(bf16)).feature_info("ds")
    assert other.config["precision"] == "bf16" and other.fingerprint != info.fingerprint
    low = open_store(str(bf16)).read_video("ds", "a").data.astype(np.float32)
    # bf16 really ran: further off than float16 storage rounds (2^-11 relative)
    assert np.abs(low - stored).max() / np.abs(stored).max() > 1e-3
    assert np.corrcoef(low.ravel(), stored.ravel())[0, 1] > 0.99
    with pytest.raises(ConfigMismatchError):
        run(opts(setup, fp32, ["ds"], "audio", precision="bf16"))

    # openSMILE-like features ignore precision: one fingerprint either way
    fb = tmp_path / "fb.zarr"
    assert run(opts(setup, fb, ["fbank"], "audio", precision="bf16")).exit_code == 0
    assert open_store(str(fb)).feature_info("fbank").config["precision"] == "fp32"


def test_visual_precision_fp32_equals_default(setup: dict, tmp_path: Path) -> None:
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    assert run(opts(setup, a, ["dn"], precision="fp32")).exit_code == 0
    assert run(opts(setup, b, ["dn"], precision="bf16")).exit_code == 0
    x = open_store(str(a)).read_video("dn", "v").data.astype(np.float32)
    y = open_store(str(b)).read_video("dn", "v").data.astype(np.float32)
    assert x.shape == (12, setup["dim"]) and np.abs(x - y).max() / np.abs(x).max() > 1e-3


def test_batch_size_per_feature(setup: dict, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from extract.extractors.densenet import DenseNetExtractor

    assert parse_batch_sizes(["64", "dn=5", "ds=3"]) == (64, {"dn": 5, "ds": 3})
    assert parse_batch_sizes(None) == (32, {})
    for bad in (["dn=five"], ["=4"], ["x"]):
        with pytest.raises(ConfigError, match="--batch-size"):
            parse_batch_sizes(bad)

    sizes: list[int] = []
    forward = DenseNetExtractor.forward

    def spy(self, x):
        sizes.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(DenseNetExtractor, "forward", spy)
    plain, batched = tmp_path / "plain.zarr", tmp_path / "batched.zarr"
    from extract.runner.preflight import PROBE_CROPS

    assert run(opts(setup, plain, ["dn"])).exit_code == 0
    # the run's check first runs the model once on PROBE_CROPS synthetic crops
    assert sizes == [PROBE_CROPS] + [2] * 6  # then one forward per frame batch of 2
    sizes.clear()
    summary = run(opts(setup, batched, ["dn"], batch_sizes={"dn": 5}))
    assert summary.exit_code == 0
    assert sizes == [PROBE_CROPS, 5, 5, 2]  # gathered across frame batches, the rest at the end
    x = open_store(str(plain)).read_video("dn", "v")
    y = open_store(str(batched)).read_video("dn", "v")
    np.testing.assert_allclose(x.data.astype(np.float32), y.data.astype(np.float32),
                               rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(x.timestamps, y.timestamps)
    # an execution setting: the same fingerprint, so both runs may share a store
    assert (open_store(str(plain)).feature_info("dn").fingerprint
            == open_store(str(batched)).feature_info("dn").fingerprint)
    assert run(opts(setup, plain, ["dn"], batch_sizes={"dn": 3})).exit_code == 0

    with pytest.raises(ConfigError, match="extractor 'fbank' computes each input in one pass"):
        run(opts(setup, tmp_path / "c.zarr", ["fbank"], "audio", batch_sizes={"fbank": 4}))
    with pytest.raises(ConfigError, match="--batch-size names feature"):
        run(opts(setup, tmp_path / "c.zarr", ["fbank"], "audio", batch_sizes={"dn": 4}))
    with pytest.raises(ConfigError, match="positive integer"):
        run(opts(setup, tmp_path / "c.zarr", ["dn"], batch_sizes={"dn": 0}))


def test_gpu_copy_is_pinned_and_non_blocking() -> None:
    calls = []

    class Batch:
        def pin_memory(self):
            calls.append("pin")
            return self

        def to(self, device, non_blocking=False):
            calls.append((device, non_blocking))
            return self

    to_device(Batch(), "cuda:1")
    assert calls == ["pin", ("cuda:1", True)]
    calls.clear()
    to_device(Batch(), "cpu")
    assert calls == [("cpu", False)]
    x = torch.arange(4.0)
    assert torch.equal(to_device(x, "cpu"), x)


def test_cli_precision_and_batch_size(setup: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from extract.cli import app

    store = tmp_path / "cli.zarr"
    base = ["run", "-f", "ds", "-i", str(setup["audio"]), "-s", str(store), "--workers", "0",
            "--catalog", str(setup["catalog"]), "--no-progress"]
    ran = CliRunner().invoke(app, [*base, "--precision", "fp32", "--batch-size", "16",
                                   "--batch-size", "ds=3"])
    assert ran.exit_code == 0, ran.output
    info = open_store(str(store)).feature_info("ds")
    assert info.config["precision"] == "fp32" and "batch_size" not in info.config["options"]
    bad = CliRunner().invoke(app, [*base, "--precision", "half"])
    assert bad.exit_code == 2 and "--precision must be one of fp32 | bf16 | fp16" in bad.output
    bad = CliRunner().invoke(app, [*base, "--batch-size", "ds=x"])
    assert bad.exit_code == 2 and "--batch-size 'ds=x'" in bad.output
