"""The store's file operations on a local folder or an fsspec URL (``s3://``, ``memory://``, …).

Everything the store does to bytes goes through a :class:`Files` object, so the layout code does
not care where the store lives. Local stores get atomic rewrites (temp file + rename), in-place
appends and ``fsync``; object stores get whole-object writes and ranged reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Any


def is_url(path: str | Path) -> bool:
    """True for ``scheme://…`` paths (handled by fsspec); ``file://`` counts as a URL too."""
    return "://" in str(path)


class Files:
    """Local files under ``root``; see :class:`RemoteFiles` for URLs."""

    local = True

    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root))

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def read(self, rel: str) -> bytes | None:
        """A whole file (None when absent)."""
        try:
            with open(self.path(rel), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def read_from(self, rel: str, offset: int) -> bytes:
        """The bytes of a file from ``offset`` on (b"" when absent)."""
        try:
            with open(self.path(rel), "rb") as fh:
                fh.seek(offset)
                return fh.read()
        except FileNotFoundError:
            return b""

    def read_range(self, rel: str, start: int, size: int) -> bytes:
        with open(self.path(rel), "rb") as fh:
            fh.seek(start)
            return fh.read(size)

    def write(self, rel: str, data: bytes) -> None:
        """Replace a file atomically: a reader sees the old or the new bytes, never half."""
        path = self.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def append(self, rel: str, data: bytes, sync: bool) -> None:
        """Append to a file (created when absent), all or nothing: on an error (disk full) the
        file is cut back to its old length. ``sync``: durable before returning."""
        path = self.path(rel)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if sync:
                    os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def listdir(self, rel: str) -> list[str]:
        """Names in a folder ([] when absent)."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def sizes(self, rel: str) -> dict[str, int]:
        """``{name: size}`` of the files in a folder."""
        out = {}
        try:
            with os.scandir(self.path(rel)) as it:
                for entry in it:
                    with contextlib.suppress(FileNotFoundError):
                        if entry.is_file():
                            out[entry.name] = entry.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            pass
        return out

    def size(self, rel: str) -> int | None:
        try:
            return os.stat(self.path(rel)).st_size
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def makedirs(self, rel: str) -> None:
        os.makedirs(self.path(rel), exist_ok=True)

    def remove_tree(self, rel: str) -> None:
        path = self.path(rel)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(rel))

    def count_files(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.root))


class RemoteFiles(Files):
    """Objects under an fsspec URL: whole-object writes, ranged reads, no appends."""

    local = False

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def read(self, rel: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            return None

    def read_from(self, rel: str, offset: int) -> bytes:
        data = self.read(rel)
        return b"" if data is None else data[offset:]

    def read_range(self, rel: str, start: int, size: int) -> bytes:
        return self.fs.cat_file(self.path(rel), start=start, end=start + size)

    def write(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self.path(rel), bytes(data))

    def append(self, rel: str, data: bytes, sync: bool) -> None:
        raise OSError(errno.ENOTSUP, "object stores cannot append; write a new object")

    def listdir(self, rel: str) -> list[str]:
        return sorted(self.sizes(rel))

    def sizes(self, rel: str) -> dict[str, int]:
        try:
            entries = self.fs.ls(self.path(rel), detail=True, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        base = self.path(rel).rstrip("/") + "/"
        out: dict[str, int] = {}
        for e in entries:
            name = str(e["name"]).rstrip("/")
            name = name[len(base):] if name.startswith(base) else name.rsplit("/", 1)[-1]
            if name:
                out[name] = int(e.get("size") or 0)
        return out

    def size(self, rel: str) -> int | None:
        try:
            info: Any = self.fs.info(self.path(rel))
        except FileNotFoundError:
            return None
        return int(info.get("size") or 0)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def makedirs(self, rel: str) -> None:
        with contextlib.suppress(Exception):  # object stores have no real folders
            self.fs.makedirs(self.path(rel), exist_ok=True)

    def remove_tree(self, rel: str) -> None:
        if self.fs.exists(self.path(rel)):
            self.fs.rm(self.path(rel), recursive=True)

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    def count_files(self) -> int:
        return len(self.fs.find(self.root))


def files_for(path: str | Path) -> Files:
    """The :class:`Files` of a store path or URL (``file://`` URLs become local paths)."""
    text = str(path)
    if text.startswith("file://"):
        return Files(text[len("file://"):])
    return RemoteFiles(text) if is_url(text) else Files(text)
