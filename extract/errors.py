"""The error hierarchy; every message names the bad value. Also the one-line wording of
errors the CLIs show (OS errors with what to do, unexpected ones with a pointer to --debug)."""

import errno


class ExtractError(Exception):
    """Base class of the errors this package raises on purpose."""


class RegistryError(ExtractError, KeyError):
    """Unknown or duplicate component name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(ExtractError, ValueError):
    """A feature spec or option that cannot be used as given."""


class StoreError(ExtractError):
    """The feature store is missing, inconsistent, or asked to mix configs."""


class ConfigMismatchError(StoreError):
    """A feature name already holds arrays written with a different config."""


class MediaError(ExtractError):
    """A media file cannot be decoded."""


class NoAudioStreamError(MediaError):
    """The input has no audio stream (a recorded condition, not a crash)."""


class NoVideoStreamError(MediaError):
    """The input has no video stream."""


class UnavailableError(ExtractError):
    """A component's dependency or weights are not present on this machine."""


class ImportFormatError(ExtractError, ValueError):
    """A file to import (or export) does not have the expected layout; names the file and row."""


class ClaimError(ExtractError):
    """A video claim cannot be taken, renewed or released as asked."""


class ClaimLostError(ClaimError):
    """This worker's claim expired or was taken over by another worker."""


#: What to do about an OS error, by errno.
_OS_HINTS = {
    errno.ENOSPC: "free some space and re-run (finished videos are kept)",
    errno.EDQUOT: "the disk quota is used up; free some space and re-run",
    errno.EROFS: "pass a --store on a writable file system",
    errno.EACCES: "check the permissions (or pass a --store you can write to)",
    errno.EPERM: "check the permissions (or pass a --store you can write to)",
    errno.ENAMETOOLONG: "a file name is too long for this file system",
}


def os_error_line(exc: OSError) -> str:
    """One line for an OS error: what failed, on which file, and what to do."""
    what = exc.strerror or str(exc)
    where = f": {exc.filename}" if exc.filename else ""
    hint = _OS_HINTS.get(exc.errno or 0)
    return f"{what}{where}" + (f"; {hint}" if hint else "")


def unexpected_line(exc: BaseException) -> str:
    """One line for an error nobody planned for: its type and first line."""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first} (run with --debug for the traceback)"
