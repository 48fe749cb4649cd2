"""IResNet face-recognition backbones with insightface ``arcface_torch`` parameter names.

Parameter names follow insightface's ``iresnet.py`` (``conv1``, ``bn1``, ``prelu``,
``layer1..layer4`` of ``IBasicBlock`` with ``bn1, conv1, bn2, prelu, conv2, bn3,
downsample.0, downsample.1``, then ``bn2``, ``dropout``, ``fc``, ``features``), so an insightface
``backbone.pth`` (a plain state dict saved with ``torch.save``) loads unchanged with
``strict=True``. Depths: r18 ``[2, 2, 2, 2]``, r34 ``[3, 4, 6, 3]``, r50 ``[3, 4, 14, 3]``,
r100 ``[3, 13, 30, 3]``.

Input: aligned 112x112 RGB faces, ``(x / 255 - 0.5) / 0.5`` (:func:`preprocess_rgb`).
Output: a 512-d embedding (not L2-normalised; normalise before cosine comparisons).

:class:`IResNetAU` adds an optional facial-action-unit head. Its checkpoint format is one flat
state dict (``.pth`` via ``torch.save`` or ``.safetensors``) holding the backbone keys exactly as
above, unprefixed, plus ``au_head.weight`` ``(n_aus, 512)`` and ``au_head.bias`` ``(n_aus,)``
when a head is present. ``n_aus`` (and the depth and widths) are inferred from the checkpoint.
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

from extract.models.checkpoints import CheckpointError, load_into, load_state_dict

log = logging.getLogger(__name__)

DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}
INPUT_SIZE = 112
EMBEDDING_DIM = 512
_FC_SCALE = 7 * 7  # four stride-2 stages: 112 → 7
_BN_EPS = 1e-5
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN-Conv-BN-PReLU-Conv(stride)-BN plus shortcut."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=_BN_EPS)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn2(self.conv1(self.bn1(x))))
        out = self.bn3(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def _make_stage(in_ch: int, out_ch: int, blocks: int, stride: int = 2) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_ch, eps=_BN_EPS),
        )
    layers = [IBasicBlock(in_ch, out_ch, stride, downsample)]
    layers += [IBasicBlock(out_ch, out_ch) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class IResNet(nn.Module):
    """insightface IResNet; ``base_width`` 64 and ``num_features`` 512 are insightface's sizes."""

    def __init__(
        self,
        layers: Sequence[int] = DEPTHS["r100"],
        base_width: int = 64,
        num_features: int = EMBEDDING_DIM,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {layers!r}")
        if base_width < 1 or num_features < 1:
            raise ValueError(
                f"base_width and num_features must be >= 1, got {base_width}, {num_features}"
            )
        self.config = {
            "layers": tuple(layers),
            "base_width": base_width,
            "num_features": num_features,
            "dropout": dropout,
        }
        widths = [base_width * m for m in (1, 2, 4, 8)]
        self.embedding_dim = num_features
        self.conv1 = _conv3x3(3, base_width)
        self.bn1 = nn.BatchNorm2d(base_width, eps=_BN_EPS)
        self.prelu = nn.PReLU(base_width)
        in_ch = base_width
        for i, (width, blocks) in enumerate(zip(widths, layers, strict=True), start=1):
            self.add_module(f"layer{i}", _make_stage(in_ch, width, blocks))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(in_ch, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * _FC_SCALE, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=_BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # insightface freezes the scale of the final BatchNorm1d at 1.0
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` normalised RGB → ``(N, num_features)`` embedding."""
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"IResNet expects 112x112 input, got {tuple(x.shape[-2:])}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding ``(N, num_features)``."""
        return self.embed(x)

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], source: str = "<state dict>"
    ) -> IResNet:
        """Build a model whose depth and widths are inferred from ``state``; load it strictly."""
        model = cls(**infer_config(state, source))
        load_into(model, state, source=source)
        return model

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> IResNet:
        """Load an insightface ``backbone.pth`` (or a ``.safetensors`` of the same keys)."""
        return cls.from_state_dict(load_state_dict(path), source=str(path))


def iresnet(depth: str = "r100", **kwargs: object) -> IResNet:
    """IResNet of a named depth (``r18``, ``r34``, ``r50``, ``r100``)."""
    if depth not in DEPTHS:
        raise ValueError(f"unknown IResNet depth {depth!r}; known: {', '.join(DEPTHS)}")
    return IResNet(DEPTHS[depth], **kwargs)


def infer_config(state: Mapping[str, torch.Tensor], source: str = "<state dict>") -> dict:
    """IResNet constructor arguments read from the keys and shapes of a state dict."""
    absent = [k for k in ("conv1.weight", "fc.weight") if k not in state]
    if absent:
        raise CheckpointError(f"{source}: not an IResNet state dict; missing keys {absent}")
    blocks = {i: 0 for i in range(1, 5)}
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks[stage], index + 1)
    if min(blocks.values()) < 1:
        raise CheckpointError(f"{source}: IResNet stages without blocks: {blocks}")
    return {
        "layers": tuple(blocks[i] for i in range(1, 5)),
        "base_width": state["conv1.weight"].shape[0],
        "num_features": state["fc.weight"].shape[0],
    }


class IResNetAU(IResNet):
    """IResNet backbone plus an optional action-unit head (``au_head``: Linear → sigmoid).

    ``forward`` returns ``{"embedding": (N, num_features)}`` plus ``"au_probs": (N, n_aus)``
    when ``n_aus > 0``.
    """

    def __init__(self, *args: object, n_aus: int = 0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if n_aus < 0:
            raise ValueError(f"n_aus must be >= 0, got {n_aus}")
        self.n_aus = n_aus
        self.config["n_aus"] = n_aus
        self.au_head = nn.Linear(self.embedding_dim, n_aus) if n_aus else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        embedding = self.embed(x)
        out = {"embedding": embedding}
        if self.au_head is not None:
            out["au_probs"] = torch.sigmoid(self.au_head(embedding))
        return out

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], source: str = "<state dict>"
    ) -> IResNetAU:
        """Build and load strictly; ``n_aus`` comes from ``au_head.weight`` (0 if absent)."""
        head = state.get("au_head.weight")
        model = cls(**infer_config(state, source), n_aus=0 if head is None else head.shape[0])
        load_into(model, state, source=source)
        return model


def preprocess_rgb(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Aligned RGB uint8 faces ``(N, H, W, 3)`` → ``(N, 3, 112, 112)`` in ``[-1, 1]``.

    Crops that are not 112x112 are resized bilinearly (alignment is the caller's job).
    """
    x = torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images shaped (N, H, W, 3), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        size = (INPUT_SIZE, INPUT_SIZE)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return (x / 255.0 - 0.5) / 0.5
