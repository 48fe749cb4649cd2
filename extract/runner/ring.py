"""A fixed number of shared-memory slots, each holding one frame batch's face crops at every
crop size: how a CPU worker hands crops to its compute worker without pickling them.

The compute worker creates (and finally unlinks) one ring per CPU worker; the CPU worker
attaches to it by name, writes a batch into a slot it knows to be free, and sends only the slot
number and the batch's small arrays (times, masks) over its pipe. The slot is free again once
the compute worker has copied the crops it needs. The ring's size never changes, so memory
stays bounded whatever the length of the videos: ``slots * batch_size * sum(S * S * 3)`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np


@dataclass(frozen=True)
class RingLayout:
    """Slot count, frames per slot and crop sizes (the same on both sides)."""

    slots: int
    batch_size: int
    sizes: tuple[int, ...]

    @property
    def slot_bytes(self) -> int:
        return sum(self.batch_size * s * s * 3 for s in self.sizes)

    @property
    def nbytes(self) -> int:
        return self.slots * self.slot_bytes

    def offset(self, slot: int, size: int) -> int:
        """Byte offset of the ``size`` crops of ``slot``."""
        before = sum(self.batch_size * s * s * 3 for s in self.sizes[:self.sizes.index(size)])
        return slot * self.slot_bytes + before


class CropRing:
    """One ring of crop slots in shared memory (see the module doc)."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: RingLayout, owner: bool) -> None:
        self.shm = shm
        self.layout = layout
        self.owner = owner

    @property
    def name(self) -> str:
        return self.shm.name

    @classmethod
    def create(cls, layout: RingLayout) -> CropRing:
        """A new ring (the caller owns it: :meth:`close` unlinks it)."""
        if layout.slots < 1 or layout.batch_size < 1 or not layout.sizes:
            raise ValueError(f"a crop ring needs slots, a batch size and crop sizes: {layout}")
        return cls(shared_memory.SharedMemory(create=True, size=max(1, layout.nbytes)), layout,
                   owner=True)

    @classmethod
    def attach(cls, name: str, layout: RingLayout) -> CropRing:
        """The ring ``name`` made by another process (not unlinked by :meth:`close` here)."""
        # Spawned processes share their parent's resource tracker, so the registration this
        # adds (Python < 3.13) is the owner's own: it is settled when the owner unlinks, or at
        # the run's end when the owner was killed first.
        return cls(shared_memory.SharedMemory(name=name), layout, owner=False)

    def view(self, slot: int, count: int) -> dict[int, np.ndarray]:
        """Size → (count, S, S, 3) uint8 arrays backed by the slot (valid until it is reused)."""
        if not 0 <= slot < self.layout.slots or not 0 <= count <= self.layout.batch_size:
            raise IndexError(f"slot {slot} / {count} frames outside the ring {self.layout}")
        return {s: np.ndarray((count, s, s, 3), np.uint8, buffer=self.shm.buf,
                              offset=self.layout.offset(slot, s)) for s in self.layout.sizes}

    def write(self, slot: int, crops: dict[int, np.ndarray]) -> int:
        """Copy one batch's crops (size → (n, S, S, 3) uint8) into ``slot``; returns n."""
        count = len(next(iter(crops.values())))
        for size, target in self.view(slot, count).items():
            target[...] = crops[size]
        return count

    def close(self) -> None:
        """Detach (and remove, when this process made the ring)."""
        try:
            self.shm.close()
        except BufferError:  # a view is still alive somewhere; the mapping goes with the process
            pass
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass
