"""The exceptions cogframe raises for problems a user can fix.

Every :class:`CogframeError` is user-facing: the CLI prints ``error: <message>`` and exits with
status 2, without a traceback (``--debug`` shows it). So each message is one paragraph that names
the problem AND the fix. Anything that is not a ``CogframeError`` is treated as a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


class CogframeError(Exception):
    """A problem the user can fix; the message says what went wrong and how to fix it."""


class ConfigError(CogframeError):
    """A bad recipe, override, component name or keyword."""


class UnknownComponentError(ConfigError):
    """A component name that no loaded plugin registered."""


class DuplicateComponentError(CogframeError):
    """Two plugins registered the same (kind, name)."""


class UnavailableError(CogframeError):
    """A component exists but cannot run here (a missing package or device); the reason is in the message."""


class ShapeError(CogframeError, ValueError):
    """A tensor or token layout has the wrong shape; the message says which dimension."""


class DataError(CogframeError):
    """Unreadable data: a corrupt shard, checkpoint or video file."""


@dataclass(frozen=True)
class Problem:
    """One problem found while checking a recipe or a component's keywords.

    Attributes:
        where: The recipe key path it concerns, e.g. ``model.attention.name`` or ``loggers[0]``.
        what: What is wrong.
        fix: How to fix it; empty when ``what`` already says it.
    """

    where: str
    what: str
    fix: str

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        return f"{prefix}{self.what}: {self.fix}" if self.fix else f"{prefix}{self.what}"


def problems_error(header: str, problems: list[Problem], cls: type[CogframeError] = ConfigError) -> CogframeError:
    """Builds one error listing several problems, one per line under ``header``.

    Args:
        header: What was being checked, e.g. ``"recipe tiny/stage1 is invalid"``.
        problems: The problems found; must not be empty.
        cls: The exception class to build.

    Returns:
        An exception ready to raise; a single problem is folded into one line.
    """
    if len(problems) == 1:
        return cls(f"{header}: {problems[0]}")
    lines = "\n".join(f"  - {p}" for p in problems)
    return cls(f"{header} ({len(problems)} problems):\n{lines}")
