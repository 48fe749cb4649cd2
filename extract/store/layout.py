"""Names, sizes and the Zarr v3 metadata documents of the store's layout (format 2).

A pack is a group ``<feature>/packs/<pack>`` holding three plain arrays: ``data`` (R, D),
``time`` (R,) float64 and ``mask`` (R,) bool, each uncompressed (the ``bytes`` codec only) with
a regular chunk grid, so a row's bytes sit at a computable offset of one chunk file. The
metadata documents are the ones zarr-python writes for such arrays (tests read them with zarr).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

STORE_FORMAT = 2
META = "zarr.json"
PACKS = "packs"
INDEX = "_index"
RUNS_GROUP = "_runs"
LOCKS_GROUP = "_locks"
FEATURE_COPY = "feature.json"

#: A pack holds about this many bytes of rows before its writer starts a new one.
PACK_BYTES = 1 << 30
#: Bytes per data chunk file (local stores; object stores upload a whole chunk object at each
#: commit that touches it, so they get smaller ones).
CHUNK_BYTES = 32 << 20
REMOTE_CHUNK_BYTES = 4 << 20
#: Rows per chunk of the time (float64) and mask (bool) arrays, at most.
SIDE_CHUNK_ROWS = 1 << 20
#: Rows of a pack, at most (a longer video gets a pack of its own, sized to it).
MAX_PACK_ROWS = 1 << 24

ARRAYS = ("data", "time", "mask")


@dataclass(frozen=True)
class PackLayout:
    """Shape and chunking of one pack's arrays."""

    dim: int
    dtype: str  # data dtype (little-endian)
    capacity: int  # rows the pack's arrays are sized for
    chunk_rows: int  # rows per data chunk
    side_rows: int  # rows per time / mask chunk

    @classmethod
    def plan(cls, dim: int, dtype: str, rows_needed: int = 0, *, pack_bytes: int = PACK_BYTES,
             chunk_bytes: int = CHUNK_BYTES, side_rows: int | None = None) -> PackLayout:
        """A layout with room for ``rows_needed`` rows (at least a full pack's worth).

        ``side_rows``: rows per time / mask chunk (None: up to ``SIDE_CHUNK_ROWS``, sparse
        files on a local store; 0: as many as a data chunk, for object stores, which upload
        whole chunk objects)."""
        row_bytes = max(1, dim * np.dtype(dtype).itemsize)
        chunk = max(1, chunk_bytes // row_bytes)
        cap = min(max(1, pack_bytes // row_bytes), MAX_PACK_ROWS)
        cap = max(cap, rows_needed, 1)
        cap = math.ceil(cap / chunk) * chunk
        side = min(cap, SIDE_CHUNK_ROWS) if side_rows is None else side_rows or chunk
        return cls(int(dim), np.dtype(dtype).name, int(cap), int(chunk), int(side))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PackLayout:
        return cls(int(d["dim"]), str(d["dtype"]), int(d["capacity"]), int(d["chunk_rows"]),
                   int(d["side_rows"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def array(self, name: str) -> ArraySpec:
        """How array ``name`` (data | time | mask) is laid out."""
        if name == "data":
            return ArraySpec(name, np.dtype(self.dtype), self.dim, self.chunk_rows)
        dtype = np.dtype(np.float64) if name == "time" else np.dtype(bool)
        return ArraySpec(name, dtype, 0, self.side_rows)


@dataclass(frozen=True)
class ArraySpec:
    """One pack array: dtype, width (0: 1-D) and rows per chunk."""

    name: str
    dtype: np.dtype
    width: int
    chunk_rows: int

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * max(1, self.width)

    @property
    def chunk_bytes(self) -> int:
        return self.row_bytes * self.chunk_rows

    def chunk_key(self, index: int) -> str:
        return f"c/{index}/0" if self.width else f"c/{index}"

    def row_shape(self) -> tuple[int, ...]:
        return (self.width,) if self.width else ()


def pack_dir(feature: str, pack: str) -> str:
    return f"{feature}/{PACKS}/{pack}"


def array_doc(spec: ArraySpec, rows: int) -> bytes:
    """The ``zarr.json`` of a pack array with ``rows`` rows: a plain Zarr v3 array document
    (regular chunks, default ``/`` keys, the ``bytes`` codec only), as zarr-python writes it."""
    ndim = 2 if spec.width else 1
    codec: dict[str, Any] = {"name": "bytes"}
    if spec.dtype.itemsize > 1:
        codec["configuration"] = {"endian": "little"}
    doc = {
        "shape": [int(rows), spec.width][:ndim],
        "data_type": spec.dtype.name,
        "chunk_grid": {"name": "regular",
                       "configuration": {"chunk_shape": [spec.chunk_rows, spec.width][:ndim]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": False if spec.dtype.kind == "b" else 0.0 if spec.dtype.kind == "f" else 0,
        "codecs": [codec],
        "attributes": {},
        "dimension_names": ["row", "dim"][:ndim],
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }
    return json.dumps(doc, indent=2).encode()


def group_doc(attributes: dict[str, Any]) -> bytes:
    """A Zarr v3 group document."""
    doc = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    return json.dumps(doc, indent=2, default=str).encode()


def parse_doc(raw: bytes | None, where: str) -> dict[str, Any]:
    """A parsed ``zarr.json``; raises ValueError naming ``where`` when it is not one."""
    if raw is None:
        raise ValueError(f"{where}: missing")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or "node_type" not in doc:
        raise ValueError(f"{where}: not a Zarr v3 metadata document")
    return doc


def check_array_doc(doc: dict[str, Any], spec: ArraySpec, where: str) -> int:
    """Rows of a pack array document; ValueError when it is not the layout ``spec`` says."""
    try:
        codec = doc["codecs"][0]
        keys = doc["chunk_key_encoding"]
        ok = (doc["node_type"] == "array" and np.dtype(doc["data_type"]) == spec.dtype
              and len(doc["codecs"]) == 1 and codec["name"] == "bytes"
              and (spec.dtype.itemsize == 1
                   or codec.get("configuration", {}).get("endian") == "little")
              and keys["name"] == "default"
              and keys.get("configuration", {}).get("separator", "/") == "/"
              and not doc.get("storage_transformers")
              and doc["chunk_grid"]["configuration"]["chunk_shape"][0] == spec.chunk_rows
              and list(doc["shape"][1:]) == ([spec.width] if spec.width else []))
        rows = int(doc["shape"][0])
    except (KeyError, TypeError, IndexError, ValueError):
        ok, rows = False, 0
    if not ok:
        raise ValueError(f"{where}: metadata does not describe the pack's {spec.name} array "
                         f"({spec.dtype.name}, little-endian, uncompressed, {spec.chunk_rows} "
                         "rows per chunk)")
    return rows
