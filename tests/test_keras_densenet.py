"""Keras ``.h5`` DenseNet weights load onto the project's DenseNet and give the same outputs as
the same weights in torchvision format.

The Keras file is written here with h5py in the layout Keras' legacy HDF5 writer uses
(``layer_names`` / ``weight_names`` attributes, Keras layer names such as ``conv1/conv`` and
``conv2_block1_1_conv``, kernels ``(kh, kw, in, out)``); nothing here uses the loader's mapping.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.base import create
from extract.models.checkpoints import CheckpointError, read_keras_h5
from extract.models.densenet import KERAS_BN_EPS, DenseNet

TINY = {"growth_rate": 8, "block_config": (1, 2, 1, 1), "num_init_features": 16}


def _random_model(num_classes: int = 5, seed: int = 0) -> DenseNet:
    gen = torch.Generator().manual_seed(seed)
    model = DenseNet(**TINY, num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=gen) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=gen) * 0.1
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
    if model.classifier is not None:
        model.classifier.bias.data = torch.randn(num_classes, generator=gen)
    return model.eval()


KerasLayer = tuple[str, list[tuple[str, np.ndarray]]]


def _keras_layers(model: DenseNet, sep: str, top: bool) -> list[KerasLayer]:
    """(Keras layer name, [(variable, array)]) in Keras' DenseNet order."""

    def conv(name: str, module: torch.nn.Conv2d) -> tuple[str, list]:
        return name, [("kernel", module.weight.detach().permute(2, 3, 1, 0).numpy())]

    def bn(name: str, module: torch.nn.BatchNorm2d) -> tuple[str, list]:
        return name, [("gamma", module.weight.detach().numpy()),
                      ("beta", module.bias.detach().numpy()),
                      ("moving_mean", module.running_mean.numpy()),
                      ("moving_variance", module.running_var.numpy())]

    f = model.features
    out = [conv(f"conv1{sep}conv", f.conv0), bn(f"conv1{sep}bn", f.norm0)]
    for b, n_layers in enumerate(TINY["block_config"], start=1):
        block = getattr(f, f"denseblock{b}")
        for i in range(1, n_layers + 1):
            layer = getattr(block, f"denselayer{i}")
            stem = f"conv{b + 1}_block{i}"
            out += [bn(f"{stem}_0_bn", layer.norm1), conv(f"{stem}_1_conv", layer.conv1),
                    bn(f"{stem}_1_bn", layer.norm2), conv(f"{stem}_2_conv", layer.conv2)]
        if b < len(TINY["block_config"]):
            trans = getattr(f, f"transition{b}")
            out += [bn(f"pool{b + 1}_bn", trans.norm), conv(f"pool{b + 1}_conv", trans.conv)]
    out.append(bn("bn", f.norm5))
    if top:
        out.append(("predictions", [("kernel", model.classifier.weight.detach().t().numpy()),
                                    ("bias", model.classifier.bias.detach().numpy())]))
    return out


def write_keras_h5(model: DenseNet, path: Path, sep: str = "/", top: bool = True,
                   full_model: bool = False) -> Path:
    """Write ``model`` as Keras' legacy HDF5 writer would (Keras 2 names with ``/`` and ``:0``,
    or Keras 3 names with ``_``); ``full_model`` nests it under ``model_weights``."""
    layers = _keras_layers(model, sep, top)
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        # layers without weights are listed too, as Keras does
        names = [n for n, _ in layers] + ["input_1", "zero_padding2d", "conv1/relu", "avg_pool"]
        root.attrs["layer_names"] = [n.encode() for n in names]
        root.attrs["backend"] = b"tensorflow"
        for name in names:
            group = root.create_group(name)
            variables = dict(layers).get(name, [])
            suffix = ":0" if sep == "/" else ""
            weight_names = [f"{name}/{v}{suffix}" for v, _ in variables]
            group.attrs["weight_names"] = [w.encode() for w in weight_names]
            for w, (_, value) in zip(weight_names, variables, strict=True):
                group.create_dataset(w, data=value)
    return path


@pytest.mark.parametrize(("sep", "top", "full_model"),
                         [("/", True, False), ("_", True, True), ("/", False, False)])
def test_keras_h5_matches_torchvision_format(tmp_path: Path, sep: str, top: bool,
                                             full_model: bool) -> None:
    model = _random_model()
    pth = tmp_path / "densenet.pth"
    torch.save(model.state_dict(), pth)
    h5 = write_keras_h5(model, tmp_path / "densenet.h5", sep=sep, top=top, full_model=full_model)
    from_pth = DenseNet.from_checkpoint(pth).eval()
    from_h5 = DenseNet.from_checkpoint(h5).eval()
    assert from_h5.config["bn_eps"] == KERAS_BN_EPS
    assert from_h5.config["block_config"] == TINY["block_config"]
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = from_pth.forward_features(x), from_h5.forward_features(x)
        # only the batch-norm epsilon differs (1.001e-5 vs 1e-5)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(b, from_pth.forward_features(x.flip(-1)), atol=1e-3)
        if top:
            torch.testing.assert_close(from_h5(x), from_pth(x), rtol=1e-5, atol=1e-5)
        else:
            assert from_h5.classifier is None
            with pytest.raises(RuntimeError, match="no classifier"):
                from_h5(x)


def test_keras_h5_errors(tmp_path: Path) -> None:
    model = _random_model()
    h5 = write_keras_h5(model, tmp_path / "densenet.h5")
    with h5py.File(h5, "a") as f:
        names = [str(n) for n in f.attrs["layer_names"]] + ["dense_extra"]
        f.attrs["layer_names"] = [n.encode() for n in names]
        g = f.create_group("dense_extra")
        g.attrs["weight_names"] = [b"dense_extra/kernel:0"]
        g.create_dataset("dense_extra/kernel:0", data=np.zeros((3, 3, 4, 4), np.float32))
    with pytest.raises(CheckpointError, match="not part of a Keras DenseNet: dense_extra"):
        DenseNet.from_checkpoint(h5)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("something")
    with pytest.raises(CheckpointError, match="not a Keras weights file"):
        read_keras_h5(empty)
    keras3 = tmp_path / "model.weights.h5"
    with h5py.File(keras3, "w") as f:
        f.create_group("layers/conv2d/vars").create_dataset("0", data=np.zeros(3))
        f.create_group("vars")
    with pytest.raises(CheckpointError, match="Keras 3 .weights.h5.*model.save"):
        read_keras_h5(keras3)
    text = tmp_path / "not.h5"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read as an HDF5 file"):
        read_keras_h5(text)


def test_densenet_extractor_loads_keras_weights(tmp_path: Path) -> None:
    model = _random_model()
    h5 = write_keras_h5(model, tmp_path / "densenet.h5", top=False)
    spec = FeatureSpec("dn", "visual", "densenet", model.embedding_dim, str(h5),
                       input={"face_size": 64}, options={"output": "pooled"})
    extractor = create(spec)
    extractor.load()
    crops = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    rows = extractor.extract(crops)[""]
    assert rows.shape == (2, model.embedding_dim)
    logits = FeatureSpec("dn", "visual", "densenet", 5, str(h5), input={"face_size": 64},
                         options={"output": "logits"})
    with pytest.raises(ConfigError, match="no classifier"):
        create(logits).load()
