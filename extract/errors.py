"""The error hierarchy; every message names the bad value."""


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
