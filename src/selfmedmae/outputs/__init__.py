"""The output folder of ``evaluate`` and ``predict``: never where an input lives, never mixed with old results.

Rules, checked before any inference (so a long evaluation never finds out at the end):

* the folder is not a folder an input lives in (``predict scans/*.nii.gz --out scans`` would replace the
  scans with label maps, since outputs take the input names), nor the folder of the checkpoint or of the
  data root;
* a non-empty folder is refused unless ``--overwrite`` is given; then the files a previous
  ``evaluate`` / ``predict`` recorded in the folder's manifest (``.selfmedmae-outputs``) are removed first,
  so old figures or predictions never sit beside new numbers. Files the tool did not write are left alone;
* the folder must be writable (tried with a temporary file).

Every file written is appended to the manifest, one path per line relative to the folder.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from selfmedmae.errors import UserError

MANIFEST = ".selfmedmae-outputs"


def _same_or_inside(a: Path, b: Path) -> bool:
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def _files(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}


class OutputDir:
    """A checked output folder. :meth:`finish` (also after an error) records in the manifest every file
    written since the check, so a later ``--overwrite`` removes exactly those."""

    def __init__(self, path: Path, created: list[Path]):
        self.path, self.created = path, created  # created: folders made by the check, deepest first
        self.before = _files(path)

    def finish(self) -> None:
        if not self.path.is_dir():
            return
        new = [p for p, t in _files(self.path).items() if self.before.get(p) != t]
        if new:
            with (self.path / MANIFEST).open("a") as fh:
                fh.writelines(os.path.relpath(p, self.path) + "\n" for p in sorted(new))
            return
        for folder in self.created:  # a command that failed before writing leaves no empty folders
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
        for old in _recorded(folder):
            if old.is_file():
                old.unlink()
        (folder / MANIFEST).unlink(missing_ok=True)
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {folder}: cannot create the folder ({exc.strerror or exc})") from None
    target = OutputDir(folder, created)
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
