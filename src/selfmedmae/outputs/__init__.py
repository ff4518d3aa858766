"""The output folder of ``evaluate`` and ``predict``: never where an input lives, never mixed with old results,
and an exact record of what the command wrote there.

Rules, checked before any inference (so a long evaluation never finds out at the end):

* the folder is not a folder an input lives in (``predict scans/*.nii.gz --out scans`` would replace the
  scans with label maps, since outputs take the input names), nor the folder of the checkpoint or of the
  data root;
* a non-empty folder is refused unless ``--overwrite`` is given; then the files a previous
  ``evaluate`` / ``predict`` listed in the folder's manifest (``.selfmedmae-outputs``) are removed first,
  so old figures or predictions never sit beside new numbers. Files not in the manifest are never removed
  nor written over (a note names them);
* every output name is planned before any work (:meth:`OutputDir.plan`): two outputs of one name, or an
  output that would replace an input or a file the tool did not write, are refused;
* the folder must be writable (tried with a temporary file).

The manifest lists exactly the files the command writes (through :mod:`selfmedmae.outputs.atomic`), one path
per line relative to the folder, each added before the file is written, so even a killed command leaves a
record that ``--overwrite`` cleans up. Used as a context manager, the folder also handles interruption:
Ctrl-C or SIGTERM removes the outputs of this command, says so in one line, and exits 130 / 143.
"""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

from selfmedmae.errors import FailedAfterStart, Stopped, Terminated, UserError, raise_on_sigterm
from selfmedmae.outputs.atomic import failure, recording

MANIFEST = ".selfmedmae-outputs"


def _same_or_inside(a: Path, b: Path) -> bool:
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def _files(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}


def _shown(paths: Sequence[Path], folder: Path, most: int = 3) -> str:
    names = sorted(os.path.relpath(p, folder) for p in paths)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


class OutputDir:
    """A checked output folder. Inside ``with``, every file written through :mod:`selfmedmae.outputs.atomic`
    under it is listed in the manifest before it is written; an interruption removes them again."""

    def __init__(self, path: Path, created: list[Path], option: str = "--out"):
        self.path, self.created, self.option = path, created, option  # created: folders made, deepest first
        self.root = path.resolve()
        self.foreign = _files(path)  # files the tool did not write: never removed, never written over
        self.written: list[Path] = []
        self.new_dirs: list[Path] = []  # sub-folders made for outputs (figures/), in the order made
        self.previous_sigterm = None

    # -- the plan and the record --------------------------------------------------------------------
    def plan(self, outputs: Sequence[tuple[str, str]], inputs: Iterable[str | os.PathLike] = ()) -> None:
        """Refuse, before any work, an output name used twice, one that is an input, or one that would
        replace a file the tool did not write. ``outputs``: (path relative to the folder, what writes it)."""
        owner: dict[Path, str] = {}
        sources = {Path(i).resolve(): str(i) for i in inputs}
        for rel, what in outputs:
            target = (self.root / rel).resolve()
            if target in owner:
                raise UserError(f"{self.option} {self.path}: {rel} would be written twice, as {owner[target]} "
                                f"and as {what}; rename one of the inputs or predict them into different "
                                f"folders (nothing was computed)")
            if target in sources:
                raise UserError(f"{self.option} {self.path}: {rel} ({what}) would replace the input "
                                f"{sources[target]}; choose another folder (nothing was computed)")
            if target in self.foreign:
                raise UserError(f"{self.option} {self.path}: {rel} ({what}) would replace a file selfmedmae "
                                f"did not write there; move it or choose another folder (nothing was computed)")
            owner[target] = what

    def record(self, target: Path) -> None:
        """Called before ``target`` is written: list it in the manifest (outputs under this folder only)."""
        if not _same_or_inside(target, self.root) or target in self.written:
            return
        if target in self.foreign:
            raise FailedAfterStart(f"{target}: is a file selfmedmae did not write; it was left as it was, "
                                   f"and the command stopped here")
        parent = target.parent
        missing = []
        while parent != self.root and not parent.exists():
            missing.append(parent)
            parent = parent.parent
        self.new_dirs += reversed(missing)
        try:
            with (self.path / MANIFEST).open("a") as fh:
                fh.write(os.path.relpath(target, self.root) + "\n")
        except OSError as exc:
            raise failure(self.path / MANIFEST, exc, f"{target.name} was not written") from None
        self.written.append(target)

    # -- the command's life -------------------------------------------------------------------------
    def __enter__(self) -> "OutputDir":
        self._recording = recording(self.record)
        self._recording.__enter__()
        self.previous_sigterm = raise_on_sigterm()
        return self

    def __exit__(self, kind, exc: Optional[BaseException], tb) -> bool:
        self._recording.__exit__(None, None, None)
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)
            self.previous_sigterm = None
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            how, code = ("stopped by SIGTERM", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
            count = self.remove_written()
            raise Stopped(f"{how}; removed the {count} output file(s) this command had written to {self.path} "
                          f"(files that were there before are untouched)", code) from None
        self.finish()
        return False

    def remove_written(self) -> int:
        """Remove this command's outputs, its manifest lines and the folders it made; the count removed."""
        count = 0
        for target in self.written:
            if target.is_file():
                target.unlink()
                count += 1
        self.written = []
        (self.path / MANIFEST).unlink(missing_ok=True)
        for folder in reversed(self.new_dirs):
            try:
                folder.rmdir()
            except OSError:
                pass
        self.new_dirs = []
        self.finish()
        return count

    def finish(self) -> None:
        """A command that wrote nothing leaves no empty folders it made."""
        if self.written or not self.path.is_dir():
            return
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break


def _recorded(folder: Path) -> list[Path]:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return []
    out = []
    for line in manifest.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        target = (folder / line).resolve()
        if _same_or_inside(target, folder.resolve()):  # a manifest never deletes outside its folder
            out.append(target)
    return out


def _remove_recorded(folder: Path) -> None:
    """``--overwrite``: the files of the previous manifest (and temporary files of theirs a kill left) go."""
    for old in _recorded(folder):
        if old.is_file():
            old.unlink()
        for tmp in old.parent.glob(f".tmp-*-{old.name}") if old.parent.is_dir() else []:
            tmp.unlink(missing_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    left = sorted(_files(folder))
    if left:
        print(f"note: {folder}: left {len(left)} file(s) that no selfmedmae command recorded there as its "
              f"own ({_shown(left, folder.resolve())}); --overwrite never removes those")


def prepare(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
            option: str = "--out", protected: Iterable[str | os.PathLike] = ()) -> OutputDir:
    """Check (and create) the output folder. ``inputs``: files or folders read by the command; ``protected``:
    more folders that must not receive outputs (the data root, the checkpoint's folder)."""
    folder = Path(out)
    resolved = folder.resolve()
    for given in inputs:
        src = Path(given).resolve()
        home = src if src.is_dir() else src.parent
        if resolved == home or resolved == src:
            raise UserError(f"{option} {folder}: is where the input {given} lives; outputs take the input "
                            f"names and would replace them. Choose another folder (nothing was written)")
    for place in protected:
        if resolved == Path(place).resolve():
            raise UserError(f"{option} {folder}: is the folder {place} of the data or checkpoint; choose "
                            f"another folder (nothing was written)")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise UserError(f"{option} {folder}: folder is not empty; choose an empty or new folder, or pass "
                            f"--overwrite to replace the results a previous run wrote there (nothing was written)")
        _check_writable(folder, option)
        _remove_recorded(folder)
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {folder}: cannot create the folder ({exc.strerror or exc})") from None
    target = OutputDir(folder, created, option)
    try:
        _check_writable(folder, option)
    except UserError:
        target.finish()
        raise
    return target


def _check_writable(folder: Path, option: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"{option} {folder}: cannot write there ({exc.strerror or exc}); choose a writable "
                        f"folder (nothing was computed)") from None
