"""Errors a user causes, as opposed to bugs.

Every command-line entry point (train_net.py, demo/demo.py, tools/*.py) reports a `UserError` as
one line naming the culprit (a config key, a file, a dataset name) and exits with status 1,
without a traceback. Subclasses also derive from the built-in type a caller would expect
(ValueError, FileNotFoundError, KeyError), so that code catching those keeps working.
"""


class UserError(Exception):
    """A problem with what the user asked for or gave; its message says what to change."""


class ConfigError(UserError, ValueError):
    """A config file, key or value that cannot be used; the message names it."""
