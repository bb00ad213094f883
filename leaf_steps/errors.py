"""Errors a user can act on. Each message names the file, row or config key at fault."""


class LeafError(Exception):
    """Base class: anything the user can fix (bad input, bad config, unreachable server)."""


class ConfigError(LeafError):
    """A config value is missing, of the wrong type, or inconsistent; the message names the key."""


class InputError(LeafError):
    """An input file is missing, unreadable or malformed; the message names the file (and row)."""


class TeacherError(LeafError):
    """The teacher backend could not be set up or reached at all (per-row failures are rows, not this)."""
