"""DenseNet (Huang et al., 2017) with torchvision's parameter names.

``DenseNet().state_dict()`` has exactly the keys of ``torchvision.models.densenet121()``, so a
torchvision ``.pth`` state dict (ImageNet or fine-tuned, e.g. a 7-class FER head) loads with
``strict=True``. Checkpoints written by old torchvision versions, whose dense-layer keys read
``denselayer1.norm.1.weight`` instead of ``denselayer1.norm1.weight``, are remapped on load.

Keras weights (``keras.applications.DenseNet121``, e.g. the ImageNet file
``densenet121_weights_tf_dim_ordering_tf_kernels.h5`` that DeepSpectrum uses, with or without
its top) load too (:func:`keras_state_dict`): the same architecture (Keras pads with zeros before
the 7x7 convolution and the max pooling, as torchvision's ``padding`` does; the max pooling
follows a ReLU, so zero and -inf padding agree), mapped layer by layer onto these names, with
Keras' batch-norm epsilon ``1.001e-5`` instead of torch's ``1e-5``. A file without its top has
no classifier (``num_classes`` 0): only :meth:`DenseNet.forward_features` is defined then.

Embedding: :meth:`DenseNet.forward_features` returns ``relu(features(x))`` averaged over space,
``(N, 1024)`` for DenseNet-121. Input: RGB ``(N, 3, H, W)`` float, ImageNet-normalised
(:func:`preprocess_rgb`), typically 224x224.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extract.models.checkpoints import (
    CheckpointError,
    StateDict,
    is_keras_file,
    load_into,
    load_state_dict,
    read_keras_h5,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DENSENET121 = {"growth_rate": 32, "block_config": (6, 12, 24, 16), "num_init_features": 64}
TORCH_BN_EPS = 1e-5
KERAS_BN_EPS = 1.001e-5  # keras.applications.densenet

_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_LAYER_KEY = re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.")


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (bottleneck) then BN-ReLU-Conv3x3 producing ``growth_rate`` channels."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(out)))


class _DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each seeing the concatenation of all earlier outputs."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class _Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 halving the channels, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


def _stem(in_channels: int, num_features: int) -> list[tuple[str, nn.Module]]:
    return [
        ("conv0", nn.Conv2d(in_channels, num_features, 7, stride=2, padding=3, bias=False)),
        ("norm0", nn.BatchNorm2d(num_features)),
        ("relu0", nn.ReLU(inplace=True)),
        ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
    ]


class DenseNet(nn.Module):
    """DenseNet-BC; the defaults give DenseNet-121 (7,978,856 parameters with 1000 classes).

    ``num_classes=0`` builds no classifier (a Keras ``include_top=False`` file); ``bn_eps`` is
    every batch norm's epsilon (torch 1e-5, Keras 1.001e-5).
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
        in_channels: int = 3,
        bn_eps: float = TORCH_BN_EPS,
    ) -> None:
        super().__init__()
        if min(growth_rate, num_init_features, bn_size, in_channels) < 1 or num_classes < 0:
            raise ValueError("growth_rate, num_init_features, bn_size, in_channels must be >= 1 "
                             "and num_classes >= 0")
        if not block_config or min(block_config) < 1:
            raise ValueError(f"block_config needs positive layer counts, got {block_config!r}")
        self.config = {
            "growth_rate": growth_rate,
            "block_config": tuple(block_config),
            "num_init_features": num_init_features,
            "bn_size": bn_size,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "bn_eps": bn_eps,
        }
        self.features = nn.Sequential()
        for name, module in _stem(in_channels, num_init_features):
            self.features.add_module(name, module)
        channels = num_init_features
        for i, num_layers in enumerate(block_config, start=1):
            block = _DenseBlock(num_layers, channels, growth_rate, bn_size)
            self.features.add_module(f"denseblock{i}", block)
            channels += num_layers * growth_rate
            if i < len(block_config):
                self.features.add_module(f"transition{i}", _Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.embedding_dim = channels
        self.classifier = nn.Linear(channels, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = bn_eps
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding ``(N, embedding_dim)``: relu(features) → global average → flatten."""
        out = F.relu(self.features(x))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier logits ``(N, num_classes)``."""
        if self.classifier is None:
            raise RuntimeError("this DenseNet has no classifier (its weights came without a "
                               "top); use forward_features")
        return self.classifier(self.forward_features(x))

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], source: str = "<state dict>"
    ) -> DenseNet:
        """Build a DenseNet whose configuration is inferred from ``state`` and load it strictly."""
        state = remap_legacy_keys(state)
        model = cls(**infer_config(state, source))
        load_into(model, state, source=source)
        return model

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> DenseNet:
        """Load a torchvision-style ``.pth`` / ``.safetensors`` state dict, or Keras ``.h5``
        DenseNet weights (:func:`keras_state_dict`)."""
        if is_keras_file(path):
            state, bn_eps = keras_state_dict(read_keras_h5(path), str(path)), KERAS_BN_EPS
            model = cls(**infer_config(state, str(path)), bn_eps=bn_eps)
            load_into(model, state, source=str(path))
            return model
        return cls.from_state_dict(load_state_dict(path), source=str(path))

    def load_checkpoint(self, path: str | Path, strict: bool = True) -> DenseNet:
        """Load a checkpoint into this (already configured) model."""
        state = remap_legacy_keys(load_state_dict(path))
        load_into(self, state, source=str(path), strict=strict)
        return self


def densenet121(num_classes: int = 1000, in_channels: int = 3) -> DenseNet:
    """DenseNet-121: growth 32, blocks (6, 12, 24, 16), 64 initial features; 1024-d embedding."""
    return DenseNet(**DENSENET121, num_classes=num_classes, in_channels=in_channels)


def remap_legacy_keys(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename old torchvision keys ``...denselayerK.norm.1.weight`` → ``...norm1.weight``."""
    out: StateDict = {}
    renamed = 0
    for key, value in state.items():
        match = _LEGACY_KEY.match(key)
        if match:
            key = f"{match.group(1)}{match.group(2)}.{match.group(3)}"
            renamed += 1
        out[key] = value
    if renamed:
        log.debug("renamed %d legacy DenseNet keys", renamed)
    return out


def infer_config(state: Mapping[str, torch.Tensor], source: str = "<state dict>") -> dict:
    """DenseNet constructor arguments read from the shapes in a (remapped) state dict."""
    absent = [k for k in ("features.conv0.weight",) if k not in state]
    if absent:
        raise CheckpointError(f"{source}: not a DenseNet state dict; missing keys {absent}")
    layers: dict[int, int] = {}
    for key in state:
        match = _LAYER_KEY.match(key)
        if match:
            block, layer = int(match.group(1)), int(match.group(2))
            layers[block] = max(layers.get(block, 0), layer)
    if not layers or sorted(layers) != list(range(1, len(layers) + 1)):
        raise CheckpointError(f"{source}: dense blocks missing or not numbered 1..n: {layers}")
    first = "features.denseblock1.denselayer1."
    try:
        growth_rate = state[first + "conv2.weight"].shape[0]
        bottleneck = state[first + "conv1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing key {exc.args[0]}") from None
    conv0 = state["features.conv0.weight"]
    return {
        "growth_rate": growth_rate,
        "block_config": tuple(layers[b] for b in sorted(layers)),
        "num_init_features": conv0.shape[0],
        "bn_size": bottleneck // growth_rate,
        "num_classes": state["classifier.weight"].shape[0] if "classifier.weight" in state else 0,
        "in_channels": conv0.shape[1],
    }


_KERAS_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
              "moving_variance": "running_var"}
_KERAS_DENSE_LAYER = re.compile(r"^conv(\d+)_block(\d+)_(0_bn|1_conv|1_bn|2_conv)$")
_KERAS_TRANSITION = re.compile(r"^pool(\d+)_(bn|conv)$")
_KERAS_DENSE_PARTS = {"0_bn": "norm1", "1_conv": "conv1", "1_bn": "norm2", "2_conv": "conv2"}


def _keras_module(layer: str, variables: Mapping[str, np.ndarray]) -> str | None:
    """The torchvision module name of one Keras DenseNet layer (None: not a DenseNet layer)."""
    name = layer.replace("/", "_")  # Keras 2 names "conv1/conv", Keras 3 "conv1_conv"
    if name == "conv1_conv":
        return "features.conv0"
    if name == "conv1_bn":
        return "features.norm0"
    if name == "bn":
        return "features.norm5"
    if (m := _KERAS_DENSE_LAYER.match(name)) is not None:
        block, index, part = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
        return f"features.denseblock{block}.denselayer{index}.{_KERAS_DENSE_PARTS[part]}"
    if (m := _KERAS_TRANSITION.match(name)) is not None:
        part = "norm" if m.group(2) == "bn" else "conv"
        return f"features.transition{int(m.group(1)) - 1}.{part}"
    kernel = variables.get("kernel")
    if kernel is not None and kernel.ndim == 2:  # the top: "predictions" (or "fc1000")
        return "classifier"
    return None


def keras_state_dict(layers: Mapping[str, Mapping[str, np.ndarray]],
                     source: str = "<keras weights>") -> StateDict:
    """Keras ``DenseNet121/169/201`` layer variables (:func:`read_keras_h5`) → a torchvision
    state dict: convolution kernels ``(kh, kw, in, out)`` → ``(out, in, kh, kw)``, the dense
    top's ``(in, out)`` → ``(out, in)``, batch norm gamma / beta / moving mean / variance →
    weight / bias / running_mean / running_var. A layer that maps nowhere is an error."""
    state: StateDict = {}
    unknown = []
    for layer, variables in layers.items():
        module = _keras_module(layer, variables)
        if module is None:
            unknown.append(layer)
            continue
        for role, value in variables.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            if role in _KERAS_BN:
                state[f"{module}.{_KERAS_BN[role]}"] = tensor
            elif role == "kernel" and tensor.ndim == 4:
                state[f"{module}.weight"] = tensor.permute(3, 2, 0, 1).contiguous()
            elif role == "kernel" and tensor.ndim == 2:
                state[f"{module}.weight"] = tensor.t().contiguous()
            elif role == "bias" and module == "classifier":
                state[f"{module}.bias"] = tensor
            else:
                raise CheckpointError(f"{source}: layer {layer!r} has an unexpected {role!r} of "
                                      f"shape {tuple(tensor.shape)} for a DenseNet")
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise CheckpointError(f"{source}: {len(unknown)} layer(s) with weights that are not "
                              f"part of a Keras DenseNet: {shown}")
    return state


def preprocess_rgb(images: np.ndarray | torch.Tensor, size: int | None = 224) -> torch.Tensor:
    """RGB uint8 ``(N, H, W, 3)`` → float ``(N, 3, size, size)``, ImageNet mean/std normalised.

    ``size=None`` keeps the input resolution; otherwise faces are resized bilinearly.
    """
    x = torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images shaped (N, H, W, 3), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
