"""Fast float16 ↔ float32 conversions for the loader.

numpy converts float16 element by element (about 1 ns per value here); torch uses the CPU's
F16C instructions and is 5-10x faster. The loader's passes over the stored float16 rows (sums for
the normaliser, z-scores, packing into the float16 buffer) are dominated by these casts, so they
go through torch, which shares memory with the numpy arrays (no extra copy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def to_f32(a: np.ndarray) -> np.ndarray:
    """``a`` as a new float32 array (float16 through torch; anything else through numpy)."""
    if a.dtype == np.float16 and a.size:
        import torch

        src = a if a.flags.writeable and all(s >= 0 for s in a.strides) else a.copy()
        return torch.from_numpy(src).to(torch.float32).numpy()
    return np.array(a, dtype=np.float32)


def put_f16(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for a float16 ``dst`` (a view) and a float32 ``src``."""
    if dst.dtype == np.float16 and src.dtype == np.float32 and dst.size and dst.flags.writeable:
        import torch

        torch.from_numpy(dst).copy_(torch.from_numpy(np.ascontiguousarray(src)))
        return
    dst[...] = src


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block: the casts are a few hundred microseconds each,
    and waking torch's thread pool for each costs more than it saves (much more when the other
    cores are busy). The caller's setting comes back afterwards."""
    import torch

    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)
