"""Test-only: a disk that fills up, simulated without root (``extract run --plugin``).

Imported by the run and by its workers. With ``EXTRACT_TEST_FULL_DIR=<dir>`` and
``EXTRACT_TEST_FULL_AFTER=<n>``, the store accepts ``n`` video writes (counted across
processes by files in ``<dir>``); from then on every store write, every claim file and every
run record raises ``OSError(ENOSPC)``, as a full file system does, until ``<dir>/full`` is
removed. Without the variables (read at each write) it changes nothing.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

DIR_ENV = "EXTRACT_TEST_FULL_DIR"
AFTER_ENV = "EXTRACT_TEST_FULL_AFTER"


def _dir() -> Path | None:
    folder = os.environ.get(DIR_ENV)
    return Path(folder) if folder else None


def is_full() -> bool:
    folder = _dir()
    return folder is not None and (folder / "full").exists()


def _enospc(what: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(what))


def _install() -> None:
    import extract.claims as claims
    import extract.runner.records as records
    from extract.store import FeatureStore

    if getattr(FeatureStore, "_enospc_patched", False):
        return
    write_video = FeatureStore.write_video

    def full_write_video(self, feature, video, *args, **kwargs):  # noqa: ANN001, ANN202
        folder = _dir()  # read at each call: a test process imports this module once
        if folder is None:
            return write_video(self, feature, video, *args, **kwargs)
        if is_full():
            raise _enospc(f"{self.path}/{feature}")
        if len(list(folder.glob("written-*"))) >= int(os.environ.get(AFTER_ENV, "0")):
            (folder / "full").touch()
            raise _enospc(f"{self.path}/{feature}")
        write_video(self, feature, video, *args, **kwargs)
        (folder / f"written-{uuid.uuid4().hex}").touch()

    write_all = claims._write_all

    def full_write_all(fd: int, data: bytes) -> None:
        if is_full():
            raise _enospc("claim file")
        write_all(fd, data)

    append, write = records.RunRecords._append, records.RunRecords._write

    class FullPath(type(Path())):  # a file on the full disk: opening it for writing fails
        def open(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise _enospc(self)

        def write_text(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise _enospc(self)

    def full_append(self, path, record):  # noqa: ANN001, ANN202
        return append(self, FullPath(path) if is_full() else path, record)

    def full_write(self, path, text):  # noqa: ANN001, ANN202
        return write(self, FullPath(path) if is_full() else path, text)

    FeatureStore.write_video = full_write_video
    claims._write_all = full_write_all
    records.RunRecords._append, records.RunRecords._write = full_append, full_write
    FeatureStore._enospc_patched = True


_install()
