"""openSMILE low-level descriptors (eGeMAPS, ComParE 2016) at their native 10 ms rate.

``options.feature_set`` names an ``opensmile.FeatureSet`` (``eGeMAPSv02``, ``ComParE_2016``, …)
and ``options.level`` one of :data:`LEVELS`:

* ``lld``: the set's low-level descriptors (eGeMAPSv02: 25 columns; ComParE_2016: 65);
* ``lld_with_deltas``: the LLD columns followed by their deltas, in openSMILE's column order
  both times (ComParE_2016: 65 LLD then the 65 ``*_de`` columns = 130). openSMILE computes the
  two levels in separate passes; the delta pass returns a few more trailing rows, so rows are
  paired by position from the start (their start times agree) and cut to the shorter one.

The descriptor names (``Loudness_sma3``, …, ``*_de`` for deltas) are recorded as the feature's
``labels`` and become the column names of ``extract export --format csv``.

Row ``t``'s time is the centre of its openSMILE window, ``(start + end) / 2`` from the index
openSMILE returns, relative to the start of the waveform.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.base import EXTRACTORS, AudioExtractor, AudioRows

log = logging.getLogger(__name__)

#: level option → the openSMILE feature levels concatenated (in this order) into one row.
LEVELS: dict[str, tuple[str, ...]] = {
    "lld": ("LowLevelDescriptors",),
    "lld_with_deltas": ("LowLevelDescriptors", "LowLevelDescriptors_Deltas"),
}
#: Column counts of the LLD level of the sets whose width we know (for an early dim check).
LLD_WIDTH = {"eGeMAPSv02": 25, "ComParE_2016": 65}
INT16_MAX = 32767 / 32768  # openSMILE converts to int16 by scaling with 32768


@EXTRACTORS.register("opensmile")
class OpenSmileLLD(AudioExtractor):
    """openSMILE LLD rows for one waveform (no weights; CPU only)."""

    name = "opensmile"
    requires = ("opensmile",)
    needs_weights = False
    #: Stored as float32: some LLDs exceed float16's range (ComParE's spectral variance ~1e7).
    store_dtype = "float32"

    def __init__(self, spec: FeatureSpec, device: str = "cpu") -> None:
        super().__init__(spec, device)
        self.require_native_16k(spec, "openSMILE LLDs")
        opts = spec.options
        self.feature_set = str(opts.get("feature_set", "eGeMAPSv02"))
        self.level = str(opts.get("level", "lld"))
        if self.level not in LEVELS:
            raise ConfigError(f"feature {spec.name!r}: options.level {self.level!r} is not one of "
                              f"{', '.join(LEVELS)}")
        width = LLD_WIDTH.get(self.feature_set)
        if width is not None and width * len(LEVELS[self.level]) != spec.dim:
            raise ConfigError(f"feature {spec.name!r}: dim {spec.dim} does not match "
                              f"{self.feature_set} {self.level} "
                              f"({width * len(LEVELS[self.level])} columns)")
        self._smiles: list[Any] = []

    def load(self) -> None:
        import opensmile

        if self.feature_set not in opensmile.FeatureSet.__members__:
            raise ConfigError(f"feature {self.spec.name!r}: options.feature_set "
                              f"{self.feature_set!r} is not an openSMILE feature set; known: "
                              f"{', '.join(opensmile.FeatureSet.__members__)}")
        fset = opensmile.FeatureSet[self.feature_set]
        self._smiles = [opensmile.Smile(feature_set=fset, feature_level=opensmile.FeatureLevel[lv])
                        for lv in LEVELS[self.level]]

    def column_names(self) -> list[str]:
        """The stored columns, in order (openSMILE's descriptor names)."""
        if not self._smiles:
            self.load()
        return [c for s in self._smiles for c in s.feature_names]

    def output_labels(self) -> dict[str, list[str]]:
        """The feature's columns are openSMILE descriptors: their names, in order."""
        names = self.column_names()
        if len(names) != self.spec.dim:
            raise ConfigError(f"feature {self.spec.name!r}: dim {self.spec.dim} does not match "
                              f"{self.feature_set} {self.level} ({len(names)} columns)")
        return {self.spec.name: names}

    def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
        """(S,) float32 16 kHz waveform → (T, D) rows at 10 ms, times at window centres."""
        if centers is not None:
            raise ConfigError(f"feature {self.spec.name!r}: openSMILE LLDs are computed at their "
                              "native rate; centred windows are not supported")
        if not self._smiles:
            self.load()
        wav = np.clip(np.asarray(wav, dtype=np.float32), -1.0, INT16_MAX)
        parts, times = [], None
        for smile in self._smiles:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "segment too short": NaN row
                frame = smile.process_signal(wav, self.spec.sample_rate)
            parts.append(frame.to_numpy(dtype=np.float32))
            if times is None:
                start = frame.index.get_level_values("start").total_seconds().to_numpy()
                end = frame.index.get_level_values("end").total_seconds().to_numpy()
                times = (start + end) / 2.0
        rows = min(len(p) for p in parts)
        values = np.concatenate([p[:rows] for p in parts], axis=1)
        times = np.asarray(times[:rows], dtype=np.float64)
        mask = np.isfinite(values).all(axis=1)
        values[~mask] = 0.0
        return AudioRows({"": values}, times, mask)
