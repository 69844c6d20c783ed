"""What a user can fix, told apart from a bug.

Every error a user can act on (a bad value in a file, option or config; a missing input; a
setting this machine cannot honour) is a :class:`LesionpropError`.  The CLI prints those as
one line naming the file, row or option and the value, and exits with status 2.  Anything
else is a bug in lesionprop: the CLI shows its traceback and says so.

The subclasses also derive from the built-in exception a Python caller would expect
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class LesionpropError(Exception):
    """An error the user can fix: printed by the CLI as one line (exit status 2)."""


class InputError(LesionpropError, ValueError):
    """A value in a file, option, config or argument that cannot be used."""


class MissingInputError(LesionpropError, FileNotFoundError):
    """A file or folder the user named (or a command needs) is not there."""


class ConfigError(InputError):
    """A config key or value that cannot be used (names the key and the value)."""
