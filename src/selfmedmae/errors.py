"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (a file, a config key, a checkpoint). The message names the file or key and the problem."""

    exit_code = 2


class ConfigError(UserError):
    """A config file, key or override that cannot be used; the message names the file or key."""


class Stopped(UserError):
    """A run stopped on request (SIGINT / SIGTERM); the message says how to continue it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(BaseException):
    """Raised by the SIGTERM handler of a training run (a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` swallows it)."""
