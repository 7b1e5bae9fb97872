"""Errors that medtransfer raises for bad input: each names the file or field and what was expected."""

from __future__ import annotations


class MedtransferError(ValueError):
    """Base class: a problem with the user's input, configuration or files.

    The command line prints these as one clear message, without a traceback.
    """


class DataError(MedtransferError):
    """A dataset on disk is missing files, has an unexpected layout or unreadable images."""


class WeightsError(MedtransferError):
    """A weights file is not what was expected (not a ResNet50, truncated, a mis-shaped layer)."""


class ConfigError(MedtransferError):
    """A study or run configuration has a wrong key or value."""


class StorageError(MedtransferError):
    """A file or folder cannot be written or read: the disk is full, the folder is read-only or
    belongs to someone else. The message names the path and the system's reason."""


class TooFewRowsError(MedtransferError):
    """Too few rows (data points) for a similarity measure to be defined on them (fewer than it
    needs, more neurons than the rows can hold apart, or a debiased estimate that is not positive).
    The layer-wise analysis leaves such a layer out with a warning instead of failing."""
