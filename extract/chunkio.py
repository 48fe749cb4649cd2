"""Whole-array reads and writes of the store's plain Zarr v3 layout, straight from chunk files.

Every array :class:`~extract.store.FeatureStore` writes has a regular chunk grid whose chunks span
all columns, the default chunk-key encoding with ``/`` (``c/<i>/0`` or ``c/<i>``) and a single
little-endian ``bytes`` codec: a chunk file holds the raw C-order bytes of one full-size chunk
(the last one padded). For that layout a whole-array read is one ``readinto`` per chunk into the
output array, and a write one ``write`` per chunk, which is what ``np.load`` / ``np.save`` cost;
zarr's own path adds an event-loop round trip and copies per call (about 10x slower for 10 MB).

The metadata documents come from zarr itself (a template per dtype, made once), and the files
stay standard Zarr v3: zarr reads what is written here and the other way round. Any other
layout (compression, sharding, partial-width chunks, a big-endian codec) returns None / False
and the caller uses zarr.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from extract.errors import StoreError

META = "zarr.json"
_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                     "uint64", "float16", "float32", "float64"})


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The parsed ``zarr.json`` of an array folder (None when absent)."""
    try:
        return json.loads((folder / META).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:  # a torn or corrupt document (e.g. a killed writer)
        raise StoreError(f"{folder / META} is not valid JSON: {exc}") from exc


@functools.lru_cache(maxsize=32)
def _template(dtype: str, ndim: int, named: bool) -> str:
    """zarr's own metadata document for a plain array of this dtype and rank (as JSON text)."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    shape = (1,) * ndim
    names = ("frame", "dim")[:ndim] if named else None
    arr = zarr.create_array(zarr.storage.MemoryStore(), shape=shape, dtype=dtype, chunks=shape,
                            compressors=None, dimension_names=names)
    return arr.metadata.to_buffer_dict(default_buffer_prototype())[META].to_bytes().decode()


def array_meta(shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
               attributes: dict[str, Any],
               dimension_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The ``zarr.json`` document zarr writes for a plain array (from a zarr-made template)."""
    doc = json.loads(_template(np.dtype(dtype).name, len(shape), dimension_names is not None))
    doc["shape"] = [int(s) for s in shape]
    doc["chunk_grid"]["configuration"]["chunk_shape"] = [int(c) for c in chunks]
    doc["attributes"] = attributes
    if dimension_names is not None:
        doc["dimension_names"] = list(dimension_names)
    return doc


def write_meta(folder: Path, doc: dict[str, Any], atomic: bool = True) -> None:
    """Write ``zarr.json``; ``atomic`` (for a rewrite): a reader never sees half a document."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2)
    if not atomic:
        (folder / META).write_text(text)
        return
    tmp = folder / f".{META}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / META)


def chunk_rows(n_rows: int, row_bytes: int, target_bytes: int) -> int:
    """Rows per chunk: about ``target_bytes`` per chunk, split evenly so padding stays small."""
    if n_rows <= 0:
        return 1
    n_chunks = max(1, math.ceil(n_rows * max(1, row_bytes) / target_bytes))
    return math.ceil(n_rows / n_chunks)


def _layout(meta: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype, int, Any] | None:
    """(shape, dtype, rows per chunk, fill value) when ``meta`` is the plain layout, else None."""
    try:
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
            return None
        if meta.get("storage_transformers") or meta["data_type"] not in _DTYPES:
            return None
        grid, keys, codecs = meta["chunk_grid"], meta["chunk_key_encoding"], meta["codecs"]
        if grid.get("name") != "regular" or keys.get("name") != "default":
            return None
        if keys.get("configuration", {}).get("separator", "/") != "/":
            return None
        if len(codecs) != 1 or codecs[0].get("name") != "bytes":
            return None
        dtype = np.dtype(meta["data_type"])
        endian = codecs[0].get("configuration", {}).get("endian", "little")
        if dtype.itemsize > 1 and endian != "little":
            return None
        shape = tuple(int(s) for s in meta["shape"])
        chunks = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
        if len(shape) not in (1, 2) or len(chunks) != len(shape) or chunks[1:] != shape[1:]:
            return None
        return shape, dtype.newbyteorder("<"), chunks[0], meta.get("fill_value", 0)
    except (KeyError, TypeError, AttributeError):
        return None


def _chunk_path(folder: Path, index: int, ndim: int) -> Path:
    return folder / "c" / str(index) / "0" if ndim == 2 else folder / "c" / str(index)


def _fill(value: Any, dtype: np.dtype) -> Any:
    if isinstance(value, str):  # "NaN", "Infinity", "-Infinity"
        return float({"Infinity": "inf", "-Infinity": "-inf"}.get(value, value))
    return np.asarray(value).astype(dtype) if value is not None else 0


def read_array(folder: Path, meta: dict[str, Any]) -> np.ndarray | None:
    """The whole array in ``folder`` (None when its layout is not the plain one)."""
    layout = _layout(meta)
    if layout is None:
        return None
    shape, dtype, rows, fill = layout
    out = np.empty(shape, dtype)
    flat = out.reshape(shape[0], math.prod(shape[1:]))
    for index, start in enumerate(range(0, shape[0], rows)):
        part = flat[start:start + rows]
        path = _chunk_path(folder, index, len(shape))
        try:
            with open(path, "rb") as fh:
                got = fh.readinto(memoryview(part).cast("B"))
        except FileNotFoundError:  # never written: all fill value (zarr's convention)
            part[...] = _fill(fill, dtype)
            continue
        if got != part.nbytes:
            raise StoreError(f"chunk {path} is truncated: {got} of {part.nbytes} bytes")
    return out


def write_array(folder: Path, data: np.ndarray, meta: dict[str, Any]) -> bool:
    """Write ``data`` as the chunks of the array whose metadata is ``meta`` (already created).

    Returns False (nothing written) when the layout is not the plain one.
    """
    layout = _layout(meta)
    if layout is None:
        return False
    shape, dtype, rows, _ = layout
    if tuple(data.shape) != shape:
        raise StoreError(f"{folder}: data shape {data.shape} differs from the array's {shape}")
    data = np.ascontiguousarray(data, dtype=dtype).reshape(shape[0], math.prod(shape[1:]))
    for index, start in enumerate(range(0, shape[0], rows)):
        part = data[start:start + rows]
        path = _chunk_path(folder, index, len(shape))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(memoryview(part).cast("B"))
            if len(part) < rows:  # the edge chunk is stored at full size (fill value 0)
                fh.write(bytes((rows - len(part)) * part.shape[1] * dtype.itemsize))
    return True


def remove_tree(folder: Path) -> None:
    """Delete an array folder (no error when it is absent)."""
    shutil.rmtree(folder, ignore_errors=False) if folder.exists() else None
