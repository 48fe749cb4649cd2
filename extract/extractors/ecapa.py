"""``ecapa``: ECAPA-TDNN speaker embeddings (SpeechBrain ``spkrec-ecapa-voxceleb``), one per window.

Weights: SpeechBrain's ``embedding_model.ckpt`` (a plain state dict) or a folder holding it (for
example the hub snapshot of ``speechbrain/spkrec-ecapa-voxceleb``). The network is
:class:`~extract.models.ecapa.EcapaEmbedder`: SpeechBrain's 80-d fbank with sentence mean
normalisation, then ECAPA-TDNN; embeddings are not L2-normalised (``encode_batch`` defaults).

Windows: ``input.window`` seconds (default 1.5) every ``input.hop`` (default 0.1), or centred on
the given ``centers``, zero-padded where they leave the signal (see
:mod:`extract.extractors.audio_windows`); the fbank normalisation and the attentive pooling see
the whole window, padding included. Row times are the window centres.

Options: ``batch_size`` (windows per forward, default 64); ``arch`` (mapping) overrides the
VoxCeleb architecture for other ECAPA checkpoints, with the keys of :data:`ARCH_KEYS`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.audio_windows import WindowedAudioExtractor, full_precision
from extract.extractors.base import EXTRACTORS

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "embedding_model.ckpt"
#: ``EcapaTdnn`` arguments that ``options.arch`` may set.
ARCH_KEYS = ("input_size", "lin_neurons", "channels", "kernel_sizes", "dilations",
             "attention_channels", "res2net_scale", "se_channels", "global_context", "groups")


@EXTRACTORS.register("ecapa")
class EcapaExtractor(WindowedAudioExtractor):
    """ECAPA-TDNN embeddings of audio windows."""

    name = "ecapa"
    OPTIONS: ClassVar[dict[str, Any]] = {"batch_size": 64, "arch": None}
    DEFAULT_WINDOW: ClassVar[float] = 1.5
    DEFAULT_HOP: ClassVar[float] = 0.1

    @classmethod
    def check_options(cls, spec: FeatureSpec) -> None:
        super().check_options(spec)
        arch = spec.options.get("arch")
        if arch is None:
            return
        if not isinstance(arch, Mapping):
            raise ConfigError(f"feature {spec.name!r}: options.arch must be a mapping, got "
                              f"{arch!r}")
        unknown = sorted(set(arch) - set(ARCH_KEYS))
        if unknown:
            raise ConfigError(f"feature {spec.name!r}: unknown options.arch keys {unknown} "
                              f"(known: {', '.join(ARCH_KEYS)})")

    def build(self, source: Path) -> tuple[torch.nn.Module, int]:
        from extract.models.ecapa import EcapaEmbedder

        path = source / CHECKPOINT_NAME if source.is_dir() else source
        if not path.is_file():
            raise ConfigError(f"feature {self.spec.name!r}: {source} holds no {CHECKPOINT_NAME}")
        model = EcapaEmbedder.from_checkpoint(path, **dict(self.option("arch") or {}))
        hop = model.fbank.hop_length
        frames = 1 + int(round(self.window_s * self.spec.sample_rate)) // hop
        if frames < model.model.min_frames:
            raise ConfigError(f"feature {self.spec.name!r}: input.window {self.window_s} s gives "
                              f"{frames} fbank frames; ECAPA needs >= {model.model.min_frames}")
        return model, model.dim

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """``(n, W)`` windows → ``(n, D)``: fbank in float32, the network under autocast."""
        with full_precision(self.device):
            feats = self.model.fbank(windows)
        with self.autocast():
            return self.model.model(feats)
