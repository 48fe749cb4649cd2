"""Where things are: store locations as given on a command line, and absolute paths for work
that runs elsewhere (Ray tasks on other nodes, whose working folder is not ours).

A store is a local folder or an fsspec URL (``s3://``, ``gs://``, ``memory://``, …); a
``file://`` URL is the local folder it names. Text that was meant as a URL but lost a slash
on the way (``s3:/bucket/x``, what ``pathlib.Path("s3://bucket/x")`` makes of it) is refused
instead of becoming a local folder called ``s3:``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from extract.errors import ConfigError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MANGLED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")  # s3:/bucket (one slash)


def scheme(text: str) -> str | None:
    """The URL scheme of ``text`` (``"s3"``), or None for a plain path."""
    m = _SCHEME.match(str(text))
    return m.group(1).lower() if m else None


def is_url(text: str | Path) -> bool:
    """True for ``scheme://…`` text other than ``file://`` (which is a local path)."""
    return scheme(str(text)) not in (None, "file")


def store_location(text: str | Path, option: str = "") -> str:
    """A store path or URL, checked: ``file://`` URLs become local paths, a URL's protocol must
    be known to fsspec with its package installed, and ``s3:/x`` (a lost slash) is refused.

    Raises :class:`ConfigError` with one line saying what to give instead.
    """
    raw = str(text).strip()
    what = f"{option} {raw!r}" if option else repr(raw)
    if not raw:
        raise ConfigError(f"{option or 'the store'} is empty: give a folder such as "
                          "features.zarr or a URL such as s3://bucket/features.zarr")
    proto = scheme(raw)
    if proto is None:
        m = _MANGLED.match(raw)
        if m and len(m.group(1)) > 1:  # not a Windows drive letter such as C:/
            fixed = f"{m.group(1)}://{raw[len(m.group(0)):]}"
            raise ConfigError(f"{what} looks like a URL with a slash missing; did you "
                              f"mean {fixed!r}? (a local folder cannot be named {m.group(1)}:)")
        return raw
    if proto == "file":
        path = raw[len("file://"):]
        if not path.startswith("/"):
            raise ConfigError(f"{what}: a file:// URL needs an absolute path "
                              "(file:///data/features.zarr)")
        return path
    import fsspec

    try:
        fsspec.get_filesystem_class(proto)
    except ImportError as exc:
        raise ConfigError(f"{what}: {proto}:// needs a package that is not "
                          f"installed ({exc})") from None
    except ValueError:
        raise ConfigError(f"{what}: fsspec knows no protocol {proto!r}; use a "
                          "local folder or an s3://, gs://, file://, memory:// … URL") from None
    return raw


def absolute(path: str | Path) -> str:
    """``path`` made absolute against this process's working folder (``~`` expanded); URLs are
    returned unchanged. Symbolic links are kept, so the path reads the same on other nodes."""
    text = str(path)
    if scheme(text) is not None:
        return text
    return os.path.abspath(os.path.expanduser(text))


def lives_in_one_process(store: str) -> bool:
    """True for stores that other processes cannot see (``memory://``)."""
    return scheme(store) == "memory"
