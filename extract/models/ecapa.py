"""ECAPA-TDNN speaker embeddings (Desplanques et al., 2020) with SpeechBrain's parameter names.

``EcapaTdnn(**VOXCELEB_ECAPA).state_dict()`` has exactly the keys and shapes of
``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`` built with the ``spkrec-ecapa-voxceleb``
hyperparameters, so that model's published ``embedding_model.ckpt`` (a plain torch state dict)
loads with ``strict=True``. Numerics follow SpeechBrain's source: every convolution uses
``'same'`` padding in ``'reflect'`` mode (``floor(dilation * (k - 1) / 2)`` frames per side),
TDNN blocks are Conv -> ReLU -> BatchNorm, Res2Net blocks split channels into
``res2net_scale`` groups, SE blocks squeeze with a length-masked mean, and attentive statistics
pooling uses global context (frames concatenated with the utterance mean and std) and
``eps = 1e-12``.

:class:`EcapaEmbedder` chains :class:`~extract.models.fbank.SpeechBrainFbank` (80-d SpeechBrain
fbank + sentence mean normalisation) and the network: 16 kHz waveforms ``(N, S)`` -> ``(N, 192)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extract.errors import ConfigError
from extract.models.checkpoints import load_into, load_state_dict
from extract.models.fbank import SpeechBrainFbank, as_batch, check_lengths

log = logging.getLogger(__name__)

#: Architecture of SpeechBrain's ``spkrec-ecapa-voxceleb`` embedding model.
VOXCELEB_ECAPA: dict[str, object] = {
    "input_size": 80,
    "lin_neurons": 192,
    "channels": (1024, 1024, 1024, 1024, 3072),
    "kernel_sizes": (5, 3, 3, 3, 1),
    "dilations": (1, 2, 3, 4, 1),
    "attention_channels": 128,
    "res2net_scale": 8,
    "se_channels": 128,
    "global_context": True,
}
#: Parameter elements of ``EcapaTdnn(**VOXCELEB_ECAPA)`` (BatchNorm running stats excluded).
VOXCELEB_ECAPA_PARAMS = 20_767_552


def length_mask(lengths: torch.Tensor | None, n: int, t: int, device: torch.device) -> torch.Tensor:
    """``(N, 1, T)`` float mask: frame ``j`` of item ``i`` kept iff ``j < lengths[i] * T``."""
    if lengths is None:
        return torch.ones(n, 1, t, device=device)
    lengths = torch.as_tensor(lengths, dtype=torch.float32, device=device)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must have shape ({n},); got {tuple(lengths.shape)}")
    steps = torch.arange(t, device=device, dtype=torch.float32)
    return (steps[None, :] < lengths[:, None] * t).float().unsqueeze(1)


class Conv1d(nn.Module):
    """SpeechBrain's ``Conv1d`` (skip_transpose): reflect 'same' padding around ``self.conv``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd for 'same' padding; got {kernel_size}")
        self.pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, groups=groups
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, T)`` -> ``(N, C_out, T)``."""
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode="reflect")
        return self.conv(x)


class BatchNorm1d(nn.Module):
    """SpeechBrain's ``BatchNorm1d`` wrapper: the torch layer lives in ``self.norm``."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(input_size, eps=1e-5, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T)`` -> ``(N, C, T)``."""
        return self.norm(x)


class TDNNBlock(nn.Module):
    """Conv1d -> activation -> BatchNorm1d (-> channel dropout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int,
        activation: type[nn.Module] = nn.ReLU,
        groups: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size, dilation, groups)
        self.activation = activation()
        self.norm = BatchNorm1d(out_channels)
        self.dropout = nn.Dropout1d(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, T)`` -> ``(N, C_out, T)``."""
        return self.dropout(self.norm(self.activation(self.conv(x))))


class Res2NetBlock(nn.Module):
    """Res2Net with dilation: chunk 0 passes through, chunk i gets TDNN(x_i + y_{i-1})."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int = 8,
        kernel_size: int = 3,
        dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels % scale or out_channels % scale:
            raise ConfigError(
                f"channels ({in_channels}, {out_channels}) must be divisible by "
                f"res2net_scale={scale}"
            )
        width_in, width_out = in_channels // scale, out_channels // scale
        self.blocks = nn.ModuleList(
            TDNNBlock(width_in, width_out, kernel_size, dilation, dropout=dropout)
            for _ in range(scale - 1)
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T)`` -> ``(N, C, T)``."""
        outs = []
        y = None
        for i, x_i in enumerate(torch.chunk(x, self.scale, dim=1)):
            if i == 0:
                y = x_i
            elif i == 1:
                y = self.blocks[0](x_i)
            else:
                y = self.blocks[i - 1](x_i + y)
            outs.append(y)
        return torch.cat(outs, dim=1)


class SEBlock(nn.Module):
    """Squeeze-and-excitation with a length-masked temporal mean."""

    def __init__(self, in_channels: int, se_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = Conv1d(in_channels, se_channels, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = Conv1d(se_channels, out_channels, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C, T)`` -> ``(N, C, T)`` rescaled per channel."""
        if lengths is None:
            s = x.mean(dim=2, keepdim=True)
        else:
            mask = length_mask(lengths, x.shape[0], x.shape[-1], x.device)
            s = (x * mask).sum(dim=2, keepdim=True) / mask.sum(dim=2, keepdim=True)
        s = self.sigmoid(self.conv2(self.relu(self.conv1(s))))
        return s * x


def _weighted_stats(
    x: torch.Tensor, weights: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over time of ``x`` (N, C, T) under ``weights`` summing to 1 over T."""
    mean = (weights * x).sum(dim=2)
    var = (weights * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2)
    return mean, torch.sqrt(var.clamp(min=eps))


class AttentiveStatisticsPooling(nn.Module):
    """Channel-wise attentive mean and std, optionally with global (utterance) context."""

    def __init__(
        self, channels: int, attention_channels: int = 128, global_context: bool = True
    ) -> None:
        super().__init__()
        self.eps = 1e-12
        self.global_context = global_context
        in_att = channels * 3 if global_context else channels
        self.tdnn = TDNNBlock(in_att, attention_channels, 1, 1)
        self.tanh = nn.Tanh()
        self.conv = Conv1d(attention_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C, T)`` -> ``(N, 2C, 1)``: concatenated attentive mean and std."""
        n, _, t = x.shape
        mask = length_mask(lengths, n, t, x.device)
        if self.global_context:
            total = mask.sum(dim=2, keepdim=True)
            mean, std = _weighted_stats(x, mask / total, self.eps)
            context = [mean.unsqueeze(2).expand(-1, -1, t), std.unsqueeze(2).expand(-1, -1, t)]
            attn = torch.cat([x, *context], dim=1)
        else:
            attn = x
        attn = self.conv(self.tanh(self.tdnn(attn)))
        attn = attn.masked_fill(mask == 0, float("-inf"))
        attn = F.softmax(attn, dim=2)
        mean, std = _weighted_stats(x, attn, self.eps)
        return torch.cat((mean, std), dim=1).unsqueeze(2)


class SERes2NetBlock(nn.Module):
    """TDNN(1x1) -> Res2Net -> TDNN(1x1) -> SE, plus a residual (1x1 conv if channels change)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        res2net_scale: int = 8,
        se_channels: int = 128,
        kernel_size: int = 1,
        dilation: int = 1,
        activation: type[nn.Module] = nn.ReLU,
        groups: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.tdnn1 = TDNNBlock(in_channels, out_channels, 1, 1, activation, groups, dropout)
        self.res2net_block = Res2NetBlock(
            out_channels, out_channels, res2net_scale, kernel_size, dilation
        )
        self.tdnn2 = TDNNBlock(out_channels, out_channels, 1, 1, activation, groups, dropout)
        self.se_block = SEBlock(out_channels, se_channels, out_channels)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = Conv1d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C_in, T)`` -> ``(N, C_out, T)``."""
        residual = self.shortcut(x) if self.shortcut is not None else x
        x = self.tdnn2(self.res2net_block(self.tdnn1(x)))
        return self.se_block(x, lengths) + residual


class EcapaTdnn(nn.Module):
    """ECAPA-TDNN; constructor arguments and ``state_dict`` keys mirror SpeechBrain's.

    Forward: features ``(N, T, input_size)`` (+ relative lengths ``(N,)`` in ``(0, 1]``) ->
    embeddings ``(N, lin_neurons)`` (SpeechBrain returns ``(N, 1, lin_neurons)``).
    """

    def __init__(
        self,
        input_size: int = 80,
        lin_neurons: int = 192,
        activation: type[nn.Module] = nn.ReLU,
        channels: Sequence[int] = (512, 512, 512, 512, 1536),
        kernel_sizes: Sequence[int] = (5, 3, 3, 3, 1),
        dilations: Sequence[int] = (1, 2, 3, 4, 1),
        attention_channels: int = 128,
        res2net_scale: int = 8,
        se_channels: int = 128,
        global_context: bool = True,
        groups: Sequence[int] = (1, 1, 1, 1, 1),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, kernel_sizes, dilations = list(channels), list(kernel_sizes), list(dilations)
        groups = list(groups)
        if not len(channels) == len(kernel_sizes) == len(dilations) == len(groups):
            raise ConfigError(
                "channels, kernel_sizes, dilations and groups need equal lengths; got "
                f"{channels}, {kernel_sizes}, {dilations}, {groups}"
            )
        if len(channels) < 3:
            raise ConfigError(f"need at least 3 layers (TDNN, SE-Res2Net, MFA); got {channels}")
        self.input_size = input_size
        self.lin_neurons = lin_neurons
        self.channels = channels
        self.min_frames = 1 + max(
            d * (k - 1) // 2 for k, d in zip(kernel_sizes, dilations, strict=True)
        )
        self.blocks = nn.ModuleList()
        self.blocks.append(
            TDNNBlock(
                input_size,
                channels[0],
                kernel_sizes[0],
                dilations[0],
                activation,
                groups[0],
                dropout,
            )
        )
        for i in range(1, len(channels) - 1):
            self.blocks.append(
                SERes2NetBlock(
                    channels[i - 1],
                    channels[i],
                    res2net_scale=res2net_scale,
                    se_channels=se_channels,
                    kernel_size=kernel_sizes[i],
                    dilation=dilations[i],
                    activation=activation,
                    groups=groups[i],
                    dropout=dropout,
                )
            )
        self.mfa = TDNNBlock(
            channels[-2] * (len(channels) - 2),
            channels[-1],
            kernel_sizes[-1],
            dilations[-1],
            activation,
            groups=groups[-1],
            dropout=dropout,
        )
        self.asp = AttentiveStatisticsPooling(
            channels[-1], attention_channels=attention_channels, global_context=global_context
        )
        self.asp_bn = BatchNorm1d(channels[-1] * 2)
        self.fc = Conv1d(channels[-1] * 2, lin_neurons, kernel_size=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, T, input_size)`` features -> ``(N, lin_neurons)`` embeddings."""
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"expected features (N, T, {self.input_size}); got shape {tuple(x.shape)}"
            )
        if x.shape[1] < self.min_frames:
            raise ValueError(
                f"{x.shape[1]} frames is too short; reflect padding needs >= {self.min_frames}"
            )
        if lengths is not None:
            lengths = check_lengths(lengths, x.shape[0], x.device)
        x = x.transpose(1, 2)
        outs = []
        for i, layer in enumerate(self.blocks):
            x = layer(x) if i == 0 else layer(x, lengths)
            outs.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))
        x = self.asp_bn(self.asp(x, lengths))
        return self.fc(x).squeeze(2)


class EcapaEmbedder(nn.Module):
    """16 kHz waveform -> ECAPA speaker embedding, as ``EncoderClassifier.encode_batch``.

    ``SpeechBrainFbank`` (80-d fbank, sentence mean normalisation) then :class:`EcapaTdnn`; the
    same relative ``lengths`` go to both. Embeddings are not L2-normalised and
    ``mean_var_norm_emb`` is not applied (``encode_batch(normalize=False)``).
    """

    sample_rate = 16000

    def __init__(self, model: EcapaTdnn | None = None, fbank: SpeechBrainFbank | None = None):
        super().__init__()
        self.model = model if model is not None else EcapaTdnn(**VOXCELEB_ECAPA)
        self.fbank = fbank if fbank is not None else SpeechBrainFbank(n_mels=self.model.input_size)
        if self.fbank.n_mels != self.model.input_size:
            raise ConfigError(
                f"fbank n_mels={self.fbank.n_mels} != model input_size={self.model.input_size}"
            )

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self.model.lin_neurons

    @classmethod
    def from_checkpoint(cls, path: str | Path, **arch: object) -> EcapaEmbedder:
        """Load a SpeechBrain ``embedding_model.ckpt`` (or ``.safetensors``) strictly.

        ``arch`` overrides :data:`VOXCELEB_ECAPA`. Raises
        :class:`~extract.models.checkpoints.CheckpointError` listing missing, unexpected or
        mis-shaped keys when the file does not fit the architecture.
        """
        unknown = sorted(set(arch) - set(inspect.signature(EcapaTdnn).parameters))
        if unknown:
            raise ConfigError(f"unknown ECAPA-TDNN arguments: {', '.join(unknown)}")
        model = EcapaTdnn(**{**VOXCELEB_ECAPA, **arch})
        load_into(model, load_state_dict(path), source=str(path), strict=True)
        log.info("loaded ECAPA-TDNN weights from %s", path)
        return cls(model).eval()

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, S)`` float waveform (+ relative lengths) -> ``(N, dim)`` embeddings."""
        feats = self.fbank(wav, lengths)
        return self.model(feats, lengths)

    def embed(
        self,
        wav_batch: np.ndarray | torch.Tensor,
        lengths: np.ndarray | torch.Tensor | None = None,
        sample_rate: int = 16000,
    ) -> np.ndarray:
        """``(N, S)`` (or ``(S,)``) float32 16 kHz audio -> ``(N, dim)`` float32 numpy."""
        if sample_rate != self.sample_rate:
            raise ValueError(f"EcapaEmbedder needs 16000 Hz audio; got sample_rate={sample_rate}")
        x, _, _ = as_batch(wav_batch, "wav_batch")
        device = next(self.model.parameters()).device
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.float32, device=device)
        with torch.inference_mode():
            out = self(x.to(device), lengths)
        return out.float().cpu().numpy()
