"""Errors that name the place: file, row, column, device."""

from __future__ import annotations

from pathlib import Path


class AirwattError(Exception):
    """Base class for errors the CLI reports without a traceback (exit code 2)."""


class DataError(AirwattError):
    """Bad input data, located as precisely as we know: file, row, column, device."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
        device: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.column = column
        self.device = device
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.device is not None:
            where.append(f"device {self.device!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class ConfigError(AirwattError):
    """params.yaml (or an override) is missing a key or holds a bad value."""


class ValidationFailed(AirwattError):
    """A dataset failed expectations whose severity is 'fail'."""
