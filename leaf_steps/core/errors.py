"""Errors a user can act on. Each message names the file, row or config key at fault."""

import difflib
from collections.abc import Iterable


def did_you_mean(key: object, known: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` for the known key closest to a misspelt one (difflib), else ''."""
    match = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class LeafError(Exception):
    """Base class: anything the user can fix (bad input, bad config, unreachable server)."""


class ConfigError(LeafError):
    """A config value is missing, of the wrong type, or inconsistent; the message names the key."""


class InputError(LeafError):
    """An input file is missing, unreadable or malformed; the message names the file (and row)."""


class TeacherError(LeafError):
    """The teacher backend could not be set up or reached at all (per-row failures are rows, not this)."""
