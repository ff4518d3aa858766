"""Optional dependencies (the ``dicom`` and ``export`` extras of ``pyproject.toml``), imported on first use.

A missing one is the user's to fix: :func:`need` raises a :class:`~selfmedmae.errors.ConfigError` (one line,
exit code 2 from the CLI) that names the ``pip install`` to run, instead of an ``ImportError`` traceback.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

# which extra brings which top-level module
EXTRAS = {"pydicom": "dicom", "highdicom": "dicom", "safetensors": "export", "onnx": "export",
          "onnxruntime": "export"}


def need(module: str, extra: str | None = None) -> ModuleType:
    """``import module``, or a ConfigError saying ``pip install 'selfmedmae[extra]'``."""
    extra = extra or EXTRAS.get(module.split(".")[0], module)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        from selfmedmae.errors import ConfigError

        raise ConfigError(f"{module} is not installed ({exc.__class__.__name__}); it comes with the {extra!r} "
                          f"extra: pip install 'selfmedmae[{extra}]'") from None


def have(module: str) -> bool:
    """Whether ``module`` can be imported (nothing is raised)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def version() -> str:
    """The package's version, for the files it writes (the package root is imported before any of its modules;
    reading it here keeps the modules from importing the package root, the top layer)."""
    return str(getattr(sys.modules.get("selfmedmae"), "__version__", "unknown"))
