"""Every output file is written the same way: into a temporary file beside it, then renamed over it.

* A failed write (``OSError``: a full disk, a file-size limit, a vanished folder) becomes one line naming the
  file (:class:`~selfmedmae.errors.FailedAfterStart`, exit code 3), and no partial file is left: the
  temporary file is removed and an earlier file of that name is unchanged.
* An interruption (Ctrl-C, SIGTERM) while writing removes the temporary file too.
* The command that owns an output folder (:class:`selfmedmae.outputs.OutputDir`) is told of each file before
  it is written (:func:`recording`), so it records exactly the files it writes and nothing else.

Use :func:`replacing` around any writer that takes a path, or :func:`write_text` / :func:`write_bytes`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from selfmedmae.errors import FailedAfterStart

_recorders: list[Callable[[Path], None]] = []


@contextlib.contextmanager
def recording(record: Callable[[Path], None]) -> Iterator[None]:
    """While inside, ``record(path)`` is called with the resolved path of every file :func:`replacing` is
    about to write (before any byte of it is written; it may raise to refuse the write)."""
    _recorders.append(record)
    try:
        yield
    finally:
        _recorders.remove(record)


def temporary_name(path: Path) -> Path:
    """The temporary file beside ``path``; it ends with path's name, so writers that go by the suffix
    (``.nii.gz`` compressed, ``.png``) write the same format."""
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def failure(path: Path, exc: OSError, kept: str = "no partial file was left") -> FailedAfterStart:
    """The one-line error of a write that failed."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return FailedAfterStart(f"{path}: cannot be written ({reason}); {kept}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike, what: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content into; on success it is renamed to ``path``.

    Parents are created. Raises :class:`~selfmedmae.errors.FailedAfterStart` on an ``OSError`` of the body or
    of the rename, after removing the temporary file."""
    path = Path(path)
    for record in list(_recorders):
        record(path.resolve())
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise failure(Path(what) if what else path, exc) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def write_text(path: str | os.PathLike, text: str) -> Path:
    with replacing(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with replacing(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)
