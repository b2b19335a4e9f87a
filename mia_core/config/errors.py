"""The single exception type of the config system."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """An invalid configuration: unknown key, wrong type, bad value or broken include.

    Attributes:
        problems: ``(field, message)`` pairs when raised by a schema dataclass's own
            validation; the loader uses them to prefix the dotted key and name the source
            (file or command line override) that set the offending value.
    """

    def __init__(self, message: str, problems: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
