"""Errors that are the user's to fix: the CLI prints them as one line and exits with their code: 2 when
nothing was started, 3 when the command failed after its work had started (see :class:`FailedAfterStart`)."""
import signal
import threading
from typing import Any


class UserError(Exception):
    """Bad input (a file, a config key, a checkpoint). The message names the file or key and the problem."""

    exit_code = 2


class ConfigError(UserError):
    """A config file, key or override that cannot be used; the message names the file or key."""


class FailedAfterStart(UserError):
    """A failure once the work had started (a full disk while writing outputs or checkpoints, a setting
    that fails mid-run): exit code 3. The message says what was kept."""

    exit_code = 3


class Stopped(UserError):
    """A run stopped on request (SIGINT / SIGTERM); the message says how to continue it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(BaseException):
    """Raised by the SIGTERM handler of a training run (a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` swallows it)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def raise_on_sigterm() -> Any:
    """From now on SIGTERM raises :class:`Terminated` in the main thread, so a scheduler's stop ends a command
    through its error path like Ctrl-C. Returns the previous handler (None off the main thread, where
    handlers cannot be set); give it back with ``signal.signal(signal.SIGTERM, previous)``."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, _raise_terminated)
    return None
