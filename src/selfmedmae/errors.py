"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (a file, a config key, a checkpoint). The message names the file or key and the problem."""

    exit_code = 2
