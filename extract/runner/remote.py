"""Exceptions sent from a CPU worker to its compute worker, arriving as they were raised.

A failure record names the exception's type and message (:meth:`Failure.of`), so an error met
in another process must keep both. Exceptions that pickle and come back equal are sent as they
are; others travel as an :class:`ErrorRecord` and are rebuilt as an exception of a class with
the same name, message and errno.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

from extract.runner.records import os_errno


@dataclass(frozen=True)
class ErrorRecord:
    """An exception that does not pickle: its type name, message and OS error number."""

    type_name: str
    message: str
    errno: int | None = None


class RemoteError(Exception):
    """Base of the classes that stand in for an exception raised in another process."""

    errno: int | None = None


def portable(exc: BaseException) -> BaseException | ErrorRecord:
    """``exc`` itself when it survives pickling unchanged, else its :class:`ErrorRecord`."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # noqa: BLE001, S110 — unpicklable: sent as a record
        pass
    return ErrorRecord(type(exc).__name__, str(exc), os_errno(exc))


def rebuild(sent: BaseException | ErrorRecord) -> BaseException:
    """The exception to record for what :func:`portable` sent."""
    if isinstance(sent, BaseException):
        return sent
    cls = type(sent.type_name, (RemoteError,), {})
    exc = cls(sent.message)
    if sent.errno is not None:  # keeps a full disk a full disk (the run stops handing out work)
        exc.__cause__ = OSError(sent.errno, sent.message)
    return exc
