"""``hf_speech``: wav2vec 2.0 / HuBERT / WavLM hidden states at 50 rows/s (transformers).

Weights: a folder written by ``save_pretrained`` (``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, usually ``preprocessor_config.json``), or a hub id already in the local
Hugging Face cache. ``*ForCTC`` checkpoints load too (the head is dropped).

Options (defaults in :attr:`HfSpeechExtractor.OPTIONS`):

* ``layer``: ``last`` = ``last_hidden_state`` (for the "stable layer norm" large models this
  includes the encoder's final LayerNorm); an integer ``k`` = ``hidden_states[k]`` as
  transformers 5 returns it (``0``: the input of the first transformer layer, ``k``: the output
  of layer ``k``; negative counts from the end); ``mean`` = the mean of all ``L + 1``
  ``hidden_states``. With an integer layer the encoder is cut after layer ``max(k, 1)``.
* ``normalize``: ``null`` follows ``do_normalize`` in ``preprocessor_config.json`` (without that
  file: a ``do_normalize`` in the model's ``config.json``; with neither the checkpoint is
  refused, since guessing changes every row); true makes each waveform zero-mean
  unit-variance, ``(x - mean) / sqrt(var + 1e-7)``, over the whole waveform before chunking
  (``Wav2Vec2FeatureExtractor``'s formula).
* ``chunk_s`` / ``overlap_s``: audio longer than ``chunk_s`` runs in chunks of ``chunk_s``
  seconds; consecutive chunks share ``overlap_s`` seconds and each frame is taken from the
  chunk where it lies farther from the edge (the seam sits in the middle of each overlap), so
  every frame keeps at least ``overlap_s / 2`` of context on both sides. Chunks start on
  multiples of the front end's stride, so their frames fall exactly on the whole-signal grid
  (same row count and timestamps for any chunking). The base models' front end normalises its
  first convolution with GroupNorm over time; for chunked audio its statistics are taken over
  the whole waveform (from the moments of the samples, see ``utterance_stats``), so the features
  are exactly those of the unchunked signal and only the transformer's view of context beyond
  the overlap differs. ``batch_size`` chunks run per forward.
* ``at_centers``: how ``centers`` are answered, see
  :func:`~extract.extractors.audio_windows.rows_at_centers` (``nearest`` 20 ms frame, a pooling
  window in seconds, or ViPER's ``segment`` between neighbouring centres). Rows take the
  requested times.

Timestamps. The convolutional front end has kernels ``k_i`` and strides ``s_i``; its stride is
``J = prod(s_i)`` and its receptive field ``R = 1 + sum_i (k_i - 1) * prod_{j<i} s_j`` samples
(all published models: ``J = 320``, ``R = 400``, i.e. 20 ms and 25 ms at 16 kHz). Frame ``t``
sees samples ``[t J, t J + R)`` and is stamped at its centre, ``(t J + R / 2) / sr``
(``0.02 t + 0.0125`` s). A waveform of ``S`` samples gives ``T`` frames with ``L_0 = S``,
``L_i = floor((L_{i-1} - k_i) / s_i) + 1`` (0 frames when ``S < R``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.audio_windows import (
    TorchAudioExtractor,
    as_centers,
    as_wave,
    check_at_centers,
    positive,
    rows_at_centers,
)
from extract.extractors.base import EXTRACTORS, AudioRows, to_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")
OPTIONAL_KEYS = ("masked_spec_embed",)  # only used for training-time masking
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


@dataclass(frozen=True)
class FrameGeometry:
    """Where the frames of a strided convolutional front end lie (module docstring)."""

    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    sample_rate: int = 16000

    @property
    def stride(self) -> int:
        """``J``: samples between consecutive frames."""
        return math.prod(self.strides)

    @property
    def receptive_field(self) -> int:
        """``R``: samples one frame sees."""
        jumps = np.cumprod((1, *self.strides[:-1]))
        return 1 + int(sum((k - 1) * j for k, j in zip(self.kernels, jumps, strict=True)))

    def n_frames(self, n_samples: int) -> int:
        """Frames produced from ``n_samples`` samples."""
        length = n_samples
        for k, s in zip(self.kernels, self.strides, strict=True):
            if length < k:
                return 0
            length = (length - k) // s + 1
        return length

    def samples_for(self, n_frames: int) -> int:
        """The fewest samples that give ``n_frames`` frames."""
        return (n_frames - 1) * self.stride + self.receptive_field

    def times(self, n_frames: int) -> np.ndarray:
        """Centre time (s) of each frame, ``(t J + R / 2) / sr``, float64."""
        t = np.arange(n_frames, dtype=np.float64)
        return (t * self.stride + self.receptive_field / 2.0) / self.sample_rate


def plan_chunks(n_frames: int, chunk_frames: int,
                overlap_frames: int) -> list[tuple[int, int, int]]:
    """``(first, keep_start, keep_stop)`` per chunk of at most ``chunk_frames`` frames.

    Chunk ``k`` computes frames ``[first, min(first + chunk_frames, n_frames))`` and contributes
    frames ``[keep_start, keep_stop)``; starts step by ``chunk_frames - overlap_frames`` (the
    last chunk is shorter) and seams sit in the middle of each overlap.
    """
    if n_frames <= chunk_frames:
        return [(0, 0, n_frames)]
    step = chunk_frames - overlap_frames
    if step < 1:
        raise ConfigError(f"an overlap of {overlap_frames} frames leaves no step in chunks of "
                          f"{chunk_frames} frames")
    firsts = [0]
    while firsts[-1] + chunk_frames < n_frames:
        firsts.append(firsts[-1] + step)
    seams = [(b + a + chunk_frames) // 2 for a, b in pairwise(firsts)]
    bounds = [0, *seams, n_frames]
    return [(f, bounds[i], bounds[i + 1]) for i, f in enumerate(firsts)]


def normalize_wave(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole waveform (float32)."""
    return ((wav - wav.mean()) / np.sqrt(wav.var() + NORM_EPS)).astype(np.float32, copy=False)


def _parse_layer(spec: FeatureSpec, value: Any) -> str | int:
    if value in ("last", "mean"):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"feature {spec.name!r}: options.layer is {value!r}; expected last | mean "
                      "| an integer index into hidden_states")


@EXTRACTORS.register("hf_speech")
class HfSpeechExtractor(TorchAudioExtractor):
    """Hidden states of a Wav2Vec2 / HuBERT / WavLM model, one row per 20 ms frame."""

    name = "hf_speech"
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    OPTIONS: ClassVar[dict[str, Any]] = {
        "layer": "last", "chunk_s": 20.0, "overlap_s": 1.0, "batch_size": 4, "normalize": None,
        "at_centers": "nearest",
    }

    def __init__(self, spec: FeatureSpec, device: str = "cpu") -> None:
        super().__init__(spec, device)
        self.layer = _parse_layer(spec, self.option("layer"))
        self.at_centers = check_at_centers(spec, self.option("at_centers"))
        self.geometry: FrameGeometry | None = None
        self.normalize = False
        self.layer_index: int | None = None  # resolved integer layer (None: last / mean)
        self._group_norm: Any = None  # the front end's first GroupNorm (base models), if any
        self._norm_affine: tuple[torch.Tensor, torch.Tensor] | None = None  # (scale, shift)

    @classmethod
    def check_options(cls, spec: FeatureSpec) -> None:
        opts = {**cls.OPTIONS, **spec.options}
        _parse_layer(spec, opts["layer"])
        check_at_centers(spec, opts["at_centers"])
        chunk = positive(spec, "options.chunk_s", opts["chunk_s"])
        overlap = opts["overlap_s"]
        if not (isinstance(overlap, int | float) and not isinstance(overlap, bool)
                and 0 <= overlap < chunk):
            raise ConfigError(f"feature {spec.name!r}: options.overlap_s is {overlap!r}; "
                              f"expected seconds in [0, chunk_s={chunk})")
        positive(spec, "options.batch_size", opts["batch_size"], integer=True)
        if opts["normalize"] not in (None, True, False):
            raise ConfigError(f"feature {spec.name!r}: options.normalize is "
                              f"{opts['normalize']!r}; expected null | true | false")

    # ------------------------------------------------------------------ loading
    def build(self, source: Path) -> tuple[torch.nn.Module, int]:
        import torch
        from transformers import AutoConfig, AutoModel

        if not source.is_dir() or not (source / "config.json").is_file():
            raise ConfigError(f"feature {self.spec.name!r}: hf_speech loads a Hugging Face model "
                              f"folder (config.json + weights); {source} is not one")
        try:
            config = AutoConfig.from_pretrained(str(source), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the config of {source}: {exc}") from exc
        if config.model_type not in MODEL_TYPES:
            raise ConfigError(f"{source}: model_type {config.model_type!r} is not one of "
                              f"{', '.join(MODEL_TYPES)}")
        if getattr(config, "add_adapter", False):
            raise ConfigError(f"{source}: models with add_adapter=true change the frame rate; "
                              "not supported")
        self.geometry = FrameGeometry(tuple(config.conv_kernel), tuple(config.conv_stride),
                                      self.spec.sample_rate)
        self._check_geometry(source)
        self.normalize = self._normalize_flag(source, config)
        try:
            model, info = AutoModel.from_pretrained(str(source), local_files_only=True,
                                                    dtype=torch.float32, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load {config.model_type} weights from {source}: "
                              f"{exc}") from exc
        missing = sorted(k for k in info.get("missing_keys", ()) if k not in OPTIONAL_KEYS)
        if missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise ConfigError(f"checkpoint {source} lacks {len(missing)} weights of "
                              f"{type(model).__name__} ({shown}); they would be random")
        self.layer_index = self._resolve_layer(source, config.num_hidden_layers)
        if self.layer_index is not None and self.layer_index < config.num_hidden_layers:
            keep = max(self.layer_index, 1)
            model.encoder.layers = model.encoder.layers[:keep]
            log.debug("%s: encoder cut to %d layers for layer %d", self.spec.name, keep,
                      self.layer_index)
        self._install_utterance_norm(model)
        return model, int(config.hidden_size)

    def _install_utterance_norm(self, model: torch.nn.Module) -> None:
        """Let the first conv layer's GroupNorm use whole-waveform statistics when they are set."""
        import torch

        first = model.feature_extractor.conv_layers[0]
        norm = getattr(first, "layer_norm", None)
        if not isinstance(norm, torch.nn.GroupNorm):
            return
        if norm.num_groups != norm.num_channels:
            raise ConfigError(f"{type(model).__name__}: a GroupNorm with {norm.num_groups} groups "
                              f"over {norm.num_channels} channels is not supported")

        plain = norm.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            if self._norm_affine is None:
                return plain(x)
            scale, shift = self._norm_affine  # (C, 1): GroupNorm with utterance statistics
            return torch.addcmul(shift, x, scale)  # one pass, instead of GroupNorm's own

        norm.forward = forward  # the instance attribute shadows the class method
        self._group_norm = norm

    def utterance_stats(self, x: np.ndarray, rows_per_pass: int = 1 << 16
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and variance of the first convolution's output over all of ``x``.

        The convolution is linear, ``y_c = w_c . f + b_c`` on the frames ``f`` it sees, so its
        first two moments follow from those of the frames (a ``k x k`` matrix, float64), without
        running it: ``E[y_c] = w_c . mu + b_c``, ``E[y_c^2] = w_c' M w_c + 2 b_c w_c . mu + b_c^2``.
        """
        conv = self.model.feature_extractor.conv_layers[0].conv
        k, s = conv.kernel_size[0], conv.stride[0]
        frames = np.lib.stride_tricks.sliding_window_view(x, k)[::s]  # (n, k) view
        n = len(frames)
        first, second = np.zeros(k), np.zeros((k, k))
        for a in range(0, n, rows_per_pass):
            block = frames[a:a + rows_per_pass].astype(np.float64)
            first += block.sum(axis=0)
            second += block.T @ block
        mu, moment = first / n, second / n
        w = conv.weight.detach().double().cpu().numpy().reshape(conv.out_channels, k)
        b = (conv.bias.detach().double().cpu().numpy() if conv.bias is not None
             else np.zeros(conv.out_channels))
        mean = w @ mu + b
        square = np.einsum("ck,kl,cl->c", w, moment, w) + 2 * b * (w @ mu) + b * b
        return mean, np.maximum(square - mean * mean, 0.0)

    def norm_affine(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The first GroupNorm with utterance statistics as ``y * scale + shift``, ``(C, 1)``."""
        import torch

        norm = self._group_norm
        mean, var = self.utterance_stats(x)
        scale = 1.0 / np.sqrt(var + norm.eps)
        shift = -mean * scale
        if norm.affine:
            weight, bias = (p.detach().double().cpu().numpy() for p in (norm.weight, norm.bias))
            scale, shift = scale * weight, shift * weight + bias
        return tuple(torch.tensor(v[:, None], dtype=torch.float32, device=self.device)
                     for v in (scale, shift))

    def _check_geometry(self, source: Path) -> None:
        geo = self.geometry
        hop, win = geo.stride / geo.sample_rate, geo.receptive_field / geo.sample_rate
        declared = {"input.hop": (self.spec.input.get("hop"), hop),
                    "input.window": (self.spec.input.get("window"), win)}
        if self.spec.rate != "frames":
            declared["rate"] = (self.spec.rate, 1.0 / hop)
        for key, (want, got) in declared.items():
            if want is not None and abs(float(want) - got) > 1e-6 * max(1.0, got):
                raise ConfigError(f"checkpoint {source} gives {key.split('.')[-1]} {got:g} but "
                                  f"features.yaml declares {key} {want} for {self.spec.name!r}")

    def _normalize_flag(self, source: Path, config: Any) -> bool:
        """Whether waveforms are normalised: ``options.normalize`` when set, else the
        checkpoint's ``do_normalize`` (its ``preprocessor_config.json``, else its model
        config); refused when neither says, since a guess silently changes every row."""
        if self.option("normalize") is not None:
            return bool(self.option("normalize"))
        pre = source / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            rate = cfg.get("sampling_rate", self.spec.sample_rate)
            if int(rate) != self.spec.sample_rate:
                raise ConfigError(f"{pre}: sampling_rate {rate} but features.yaml declares "
                                  f"input.sample_rate {self.spec.sample_rate} for "
                                  f"{self.spec.name!r}")
            return bool(cfg.get("do_normalize", True))
        flag = getattr(config, "do_normalize", None)
        if isinstance(flag, bool):
            log.info("%s: do_normalize=%s from %s/config.json (no preprocessor_config.json)",
                     self.spec.name, flag, source)
            return flag
        raise ConfigError(
            f"feature {self.spec.name!r}: {source} has no preprocessor_config.json and its "
            "config.json has no do_normalize, so whether the model expects zero-mean "
            "unit-variance input is unknown; set options.normalize to what its model card's "
            "preprocessor_config.json says (e.g. --set "
            f"{self.spec.name}.options.normalize=true), or copy that file into the folder")

    def _resolve_layer(self, source: Path, n_layers: int) -> int | None:
        if not isinstance(self.layer, int):
            return None
        if not -(n_layers + 1) <= self.layer <= n_layers:
            raise ConfigError(f"feature {self.spec.name!r}: options.layer {self.layer} is out of "
                              f"range for {source} ({n_layers} layers: use -{n_layers + 1}.."
                              f"{n_layers}, last or mean)")
        return self.layer % (n_layers + 1)

    # ------------------------------------------------------------------ compute
    def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
        """(S,) float32 16 kHz waveform → (T, D) hidden states at 20 ms (or rows at centres)."""
        wav = as_wave(wav, self.spec.name)
        centers = as_centers(centers, self.spec.name)
        if self.model is None:
            self.load()
        n_frames = self.geometry.n_frames(len(wav))
        values = self.frames(wav, n_frames)
        times = self.geometry.times(n_frames)
        if centers is None:
            return AudioRows({"": values}, times)
        duration = len(wav) / self.spec.sample_rate
        return rows_at_centers(values, times, centers, duration, self.at_centers)

    def frames(self, wav: np.ndarray, n_frames: int) -> np.ndarray:
        """All ``n_frames`` rows of ``wav``, computed in overlapping chunks when it is long."""
        out = np.zeros((n_frames, self.spec.dim), dtype=np.float32)
        if n_frames == 0:
            return out
        x = self.prepare(wav)
        plan = self.plan(n_frames)
        if len(plan) > 1 and self._group_norm is not None:
            self._norm_affine = self.norm_affine(x)
        try:
            for xs, part in self.batches(x, plan):
                hidden = self.forward(xs)
                for (first, start, stop), h in zip(part, hidden, strict=True):
                    out[start:stop] = h[start - first:stop - first]
        finally:
            self._norm_affine = None
        return out

    def prepare(self, wav: np.ndarray) -> np.ndarray:
        """The model's input waveform: normalised when the checkpoint wants it."""
        return normalize_wave(wav) if self.normalize else wav

    def chunk_frames(self) -> int:
        """Frames per chunk: those of ``options.chunk_s`` seconds."""
        geo = self.geometry
        n = geo.n_frames(int(round(float(self.option("chunk_s")) * geo.sample_rate)))
        if n < 1:
            raise ConfigError(f"feature {self.spec.name!r}: options.chunk_s "
                              f"{self.option('chunk_s')} is shorter than one frame")
        return n

    def plan(self, n_frames: int) -> list[tuple[int, int, int]]:
        """The chunks of a waveform of ``n_frames`` frames (one chunk when it is short enough)."""
        geo = self.geometry
        overlap = int(round(float(self.option("overlap_s")) * geo.sample_rate / geo.stride))
        return plan_chunks(n_frames, self.chunk_frames(), overlap)

    def batches(self, x: np.ndarray, plan: list[tuple[int, int, int]]
                ) -> Iterator[tuple[np.ndarray, list[tuple[int, int, int]]]]:
        """``(inputs (B, S), chunks)`` per forward: the whole signal, or up to ``batch_size``
        chunks of equal length, chunk ``(first, ...)`` starting at sample ``first * stride``."""
        if len(plan) == 1:
            yield x[None], plan
            return
        geo, n_frames = self.geometry, plan[-1][2]
        chunk, batch = self.chunk_frames(), int(self.option("batch_size"))
        lengths = [min(first + chunk, n_frames) - first for first, _, _ in plan]
        i = 0
        while i < len(plan):
            j = i + 1
            while j < len(plan) and j - i < batch and lengths[j] == lengths[i]:
                j += 1
            width = geo.samples_for(lengths[i])
            part = plan[i:j]
            yield np.stack([x[f * geo.stride:f * geo.stride + width] for f, _, _ in part]), part
            i = j

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """``(B, S)`` (normalised) float32 waveforms → ``(B, T, D)`` rows of the chosen layer."""
        import torch

        x = to_device(torch.from_numpy(np.ascontiguousarray(batch)), self.device)
        with self.autocast():
            out = self.model(x, output_hidden_states=self.layer != "last")
            if self.layer == "last":
                hidden = out.last_hidden_state.float()
            elif self.layer == "mean":
                hidden = sum(h.float() for h in out.hidden_states) / len(out.hidden_states)
            else:
                hidden = out.hidden_states[self.layer_index].float()
        return hidden.cpu().numpy()
