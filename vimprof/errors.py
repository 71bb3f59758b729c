"""Errors a user can act on: the CLI prints them on one line and exits with status 2."""


class VimprofError(Exception):
    """A failure with a message that says what to do; never a bug."""
